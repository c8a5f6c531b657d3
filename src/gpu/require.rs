//! `NVIDIA_REQUIRE_*` constraints (research §3.3): within one variable a space is OR and
//! a comma is AND; all variables are ANDed. Terms are `<property><op><value>` over `cuda`,
//! `driver`, `arch` and `brand`.
//!
//! The driver version comes from procfs; the CUDA version (`cuda`), compute capability
//! (`arch`) and brand come from NVML enrichment at discovery ([`super::nvml`]). A fact
//! enrichment could not learn (no nvidia-smi, a hung driver, an old driver without the
//! field) makes a term *unknown*. Evaluation is three-valued (Kleene): `false OR unknown`
//! is unknown, `false AND unknown` is false. A requirement that ends unknown passes with a
//! warning naming it; only a definite `false` refuses.
//!
//! Brands compare as libnvidia-container names them: lowercase, without spaces
//! (`NVIDIA RTX` is `nvidiartx`), with NVML's virtual brands under their short names
//! (`NVIDIA Virtual Compute Server` is `nvidiavcs`); see [`brand_name`].

use std::cmp::Ordering;

use super::GpuError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Term {
    prop: String,
    op: Op,
    value: String,
    text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Truth {
    True,
    False,
    Unknown,
}

/// What the host says about the driver and one selected GPU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub driver: Option<String>,
    pub cuda: Option<String>,
    /// Per selected GPU (a MIG device counts as its parent): (compute capability, brand).
    pub devices: Vec<(Option<String>, Option<String>)>,
}

/// Checks every `(variable, value)` pair. Returns warnings for requirements that could not
/// be decided; a requirement that is definitely unmet is an error naming it.
pub fn check(requirements: &[(String, String)], facts: &Facts) -> Result<Vec<String>, GpuError> {
    let mut warnings = Vec::new();
    for (name, value) in requirements {
        let alternatives = parse(value).map_err(|message| GpuError::InvalidRequest {
            name: name.clone(),
            value: value.clone(),
            message,
        })?;
        let mut devices: Vec<Option<&(Option<String>, Option<String>)>> =
            facts.devices.iter().map(Some).collect();
        if devices.is_empty() {
            devices.push(None);
        }
        let mut verdict = Truth::True;
        let mut unknown_terms: Vec<String> = Vec::new();
        for dev in devices {
            let t = eval(&alternatives, facts, dev, &mut unknown_terms);
            verdict = and(verdict, t);
        }
        match verdict {
            Truth::True => {}
            Truth::False => {
                return Err(GpuError::Requirement(format!(
                    "{name}={value}: please update your driver to a newer version, or use an earlier cuda container"
                )))
            }
            Truth::Unknown => {
                unknown_terms.sort();
                unknown_terms.dedup();
                warnings.push(format!(
                    "{name}={value} not checked: unknown {} (not learnt from the driver's \
                     nvidia-smi at discovery; `gpurun gpus --refresh` retries)",
                    unknown_terms.join(", ")
                ));
            }
        }
    }
    Ok(warnings)
}

fn and(a: Truth, b: Truth) -> Truth {
    match (a, b) {
        (Truth::False, _) | (_, Truth::False) => Truth::False,
        (Truth::Unknown, _) | (_, Truth::Unknown) => Truth::Unknown,
        _ => Truth::True,
    }
}

fn or(a: Truth, b: Truth) -> Truth {
    match (a, b) {
        (Truth::True, _) | (_, Truth::True) => Truth::True,
        (Truth::Unknown, _) | (_, Truth::Unknown) => Truth::Unknown,
        _ => Truth::False,
    }
}

fn eval(
    alternatives: &[Vec<Term>],
    facts: &Facts,
    dev: Option<&(Option<String>, Option<String>)>,
    unknown: &mut Vec<String>,
) -> Truth {
    let mut any = Truth::False;
    for conj in alternatives {
        let mut all = Truth::True;
        for term in conj {
            all = and(all, eval_term(term, facts, dev, unknown));
        }
        any = or(any, all);
    }
    any
}

fn eval_term(
    t: &Term,
    facts: &Facts,
    dev: Option<&(Option<String>, Option<String>)>,
    unknown: &mut Vec<String>,
) -> Truth {
    let fact = match t.prop.as_str() {
        "driver" => facts.driver.clone(),
        "cuda" => facts.cuda.clone(),
        // With no device selected, device properties do not constrain (as libnvidia-container).
        "arch" => match dev {
            None => return Truth::True,
            Some(d) => d.0.clone(),
        },
        "brand" => match dev {
            None => return Truth::True,
            Some(d) => d.1.clone(),
        },
        _ => None,
    };
    let Some(fact) = fact else {
        unknown.push(format!("{} ({})", t.prop, t.text));
        return Truth::Unknown;
    };
    let ord = if t.prop == "brand" {
        if brand_name(&fact) == brand_name(&t.value) {
            Ordering::Equal
        } else {
            Ordering::Less
        }
    } else {
        compare_versions(&fact, &t.value)
    };
    let ok = match t.op {
        Op::Eq => ord == Ordering::Equal,
        Op::Ne => ord != Ordering::Equal,
        Op::Lt => ord == Ordering::Less,
        Op::Le => ord != Ordering::Greater,
        Op::Gt => ord == Ordering::Greater,
        Op::Ge => ord != Ordering::Less,
    };
    if ok {
        Truth::True
    } else {
        Truth::False
    }
}

/// A brand as `brand=` terms name it: lowercase ASCII letters and digits only, with the
/// names NVML's header gives its virtual brands mapped to libnvidia-container's short
/// ones.
pub fn brand_name(reported: &str) -> String {
    let flat: String = reported
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let short = match flat.as_str() {
        "nvidiavirtualapplications" | "virtualapplications" => "nvidiavapps",
        "nvidiavirtualpc" | "virtualpc" => "nvidiavpc",
        "nvidiavirtualcomputeserver" | "virtualcomputeserver" => "nvidiavcs",
        "nvidiartxvirtualworkstation" | "rtxvirtualworkstation" => "nvidiavws",
        "cloudgaming" => "nvidiacloudgaming",
        "rtx" => "nvidiartx",
        _ => return flat,
    };
    short.to_string()
}

/// Numeric dotted comparison; trailing `.0` parts are ignored (`12.0` == `12`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |s: &str| -> Vec<u64> {
        let mut v: Vec<u64> = s
            .split('.')
            .map(|p| p.trim().parse().unwrap_or(0))
            .collect();
        while v.last() == Some(&0) {
            v.pop();
        }
        v
    };
    parts(a).cmp(&parts(b))
}

/// Space-separated alternatives of comma-separated terms.
fn parse(value: &str) -> Result<Vec<Vec<Term>>, String> {
    let mut out = Vec::new();
    for alt in value.split_whitespace() {
        let mut conj = Vec::new();
        for t in alt.split(',').filter(|t| !t.is_empty()) {
            conj.push(parse_term(t)?);
        }
        if !conj.is_empty() {
            out.push(conj);
        }
    }
    Ok(out)
}

fn parse_term(t: &str) -> Result<Term, String> {
    let pos = t
        .find(['=', '!', '<', '>'])
        .ok_or_else(|| format!("{t:?} has no operator"))?;
    let (prop, rest) = t.split_at(pos);
    let (op, value) = [
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("!=", Op::Ne),
        ("=", Op::Eq),
        ("<", Op::Lt),
        (">", Op::Gt),
    ]
    .into_iter()
    .find_map(|(s, op)| rest.strip_prefix(s).map(|v| (op, v)))
    .ok_or_else(|| format!("{t:?} has an invalid operator"))?;
    let prop = prop.trim().to_ascii_lowercase();
    if prop.is_empty() || value.is_empty() {
        return Err(format!("{t:?} is incomplete"));
    }
    if prop == "brand" && !matches!(op, Op::Eq | Op::Ne) {
        return Err(format!("{t:?}: brand only supports = and !="));
    }
    if matches!(prop.as_str(), "cuda" | "driver" | "arch")
        && !value
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("{t:?}: {value:?} is not a version"));
    }
    Ok(Term {
        prop,
        op,
        value: value.to_string(),
        text: t.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn facts(driver: &str, cuda: Option<&str>, devs: &[(Option<&str>, Option<&str>)]) -> Facts {
        Facts {
            driver: Some(driver.into()),
            cuda: cuda.map(Into::into),
            devices: devs
                .iter()
                .map(|(a, b)| (a.map(Into::into), b.map(Into::into)))
                .collect(),
        }
    }

    fn req(v: &str) -> Vec<(String, String)> {
        vec![("NVIDIA_REQUIRE_CUDA".into(), v.into())]
    }

    #[test]
    fn truth_table() {
        let tesla = facts("418.40", Some("12.2"), &[(Some("8.0"), Some("Tesla"))]);
        let geforce = facts("418.40", Some("12.2"), &[(Some("8.6"), Some("GeForce"))]);
        let old = facts("410.1", Some("11.0"), &[(Some("8.0"), Some("Tesla"))]);
        let image = "cuda>=12.0 brand=tesla,driver>=418,driver<419";
        // cuda>=12.0 alone is enough.
        assert!(check(&req(image), &tesla).is_ok());
        assert!(check(&req(image), &geforce).is_ok());
        // Neither alternative holds: cuda 11.0 < 12.0, and driver 410 < 418.
        let e = check(&req(image), &old).unwrap_err().to_string();
        assert!(
            e.contains("unsatisfied condition") && e.contains(image),
            "{e}"
        );
        // Comma is AND.
        assert!(check(&req("brand=tesla,arch>=8.0"), &tesla).is_ok());
        assert!(check(&req("brand=tesla,arch>=8.0"), &geforce).is_err());
        // Space is OR.
        assert!(check(&req("brand=quadro brand=geforce"), &geforce).is_ok());
        assert!(check(&req("brand=quadro brand=geforce"), &tesla).is_err());
        // Operators and trailing zeros.
        assert!(check(&req("cuda=12.2.0"), &tesla).is_ok());
        assert!(check(&req("cuda!=12.2"), &tesla).is_err());
        assert!(check(&req("driver<418.40.1"), &tesla).is_ok());
        assert!(check(&req("driver>418.40"), &tesla).is_err());
        assert!(check(&req("arch<=8.0"), &tesla).is_ok());
        // Variables are ANDed.
        let two = vec![
            ("NVIDIA_REQUIRE_CUDA".to_string(), "cuda>=12.0".to_string()),
            (
                "NVIDIA_REQUIRE_DRIVER".to_string(),
                "driver>=500".to_string(),
            ),
        ];
        assert!(check(&two, &tesla).is_err());
    }

    #[test]
    fn every_selected_device_must_satisfy_device_terms() {
        let mixed = facts(
            "550.1",
            None,
            &[(Some("8.0"), Some("Tesla")), (Some("7.0"), Some("Tesla"))],
        );
        assert!(check(&req("arch>=8.0"), &mixed).is_err());
        let none = facts("550.1", None, &[]);
        assert!(check(&req("arch>=9.0"), &none).is_ok());
    }

    #[test]
    fn unknown_facts_pass_with_a_warning_unless_something_is_definitely_false() {
        let f = facts("550.54.15", None, &[(None, None)]);
        let w = check(&req("cuda>=12.0"), &f).unwrap();
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("cuda (cuda>=12.0)") && w[0].contains("nvidia-smi"),
            "{w:?}"
        );
        // unknown OR true = true, no warning.
        assert!(check(&req("cuda>=12.0 driver>=550"), &f)
            .unwrap()
            .is_empty());
        // unknown AND false = false.
        assert!(check(&req("cuda>=12.0,driver>=600"), &f).is_err());
        // unknown OR false = unknown: passes with a warning.
        assert_eq!(check(&req("cuda>=12.0 driver>=600"), &f).unwrap().len(), 1);
        // A property nobody knows is unknown, not an error.
        assert_eq!(check(&req("jetpack>=5"), &f).unwrap().len(), 1);
    }

    #[test]
    fn brands_compare_as_libnvidia_container_names_them() {
        let dev = |b: &str| facts("550.1", Some("12.4"), &[(Some("8.6"), Some(b))]);
        for (reported, term) in [
            ("NVIDIA RTX", "brand=nvidiartx"),
            ("RTX", "brand=nvidiartx"),
            ("GeForce RTX", "brand=geforcertx"),
            ("Quadro RTX", "brand=quadrortx"),
            ("Titan RTX", "brand=titanrtx"),
            ("NVIDIA", "brand=nvidia"),
            ("Unknown", "brand=unknown"),
            ("Tesla", "brand=TESLA"),
            ("NVIDIA Virtual Compute Server", "brand=nvidiavcs"),
            ("NVIDIA RTX Virtual Workstation", "brand=nvidiavws"),
            ("NVIDIA Cloud Gaming", "brand=nvidiacloudgaming"),
        ] {
            assert!(
                check(&req(term), &dev(reported)).is_ok(),
                "{reported} {term}"
            );
        }
        assert!(check(&req("brand=nvidia"), &dev("NVIDIA RTX")).is_err());
        assert!(check(&req("brand!=geforce"), &dev("GeForce RTX")).is_ok());
    }

    #[test]
    fn malformed_terms_are_errors_naming_them() {
        let f = facts("550.1", None, &[]);
        let e = check(&req("cuda~12"), &f).unwrap_err().to_string();
        assert!(e.contains("cuda~12"), "{e}");
        assert!(check(&req("brand>=tesla"), &f).is_err());
        assert!(check(&req("driver>=abc"), &f).is_err());
        assert!(check(&req("cuda>="), &f).is_err());
    }
}

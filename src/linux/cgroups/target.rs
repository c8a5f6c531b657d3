//! Where a container's controllers live, as the resource writers see it: each controller's
//! directory and whether it has v1 or v2 files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::CgroupError;
use super::fs;
use super::root::Layout;

/// Where each controller of one container lives.
pub(crate) struct Target<'a> {
    pub layout: Layout,
    pub v1: &'a BTreeMap<String, PathBuf>,
    pub unified: Option<&'a Path>,
    /// The controllers enabled for the unified leaf (its `cgroup.controllers`).
    pub unified_controllers: Vec<String>,
}

/// The directory holding one controller, and which version of files it has.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Place<'a> {
    V1(&'a Path),
    V2(&'a Path),
}

impl<'a> Target<'a> {
    pub fn new(
        layout: Layout,
        v1: &'a BTreeMap<String, PathBuf>,
        unified: Option<&'a Path>,
    ) -> Result<Self, CgroupError> {
        let unified_controllers = match unified {
            Some(dir) => fs::read(dir, "cgroup.controllers")?
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            None => Vec::new(),
        };
        Ok(Target {
            layout,
            v1,
            unified,
            unified_controllers,
        })
    }

    /// v1 when the controller has a v1 hierarchy (hybrid hosts keep resources there), else
    /// the unified leaf when the controller is enabled for it.
    pub fn place(&self, v1_name: &str, v2_name: &str) -> Option<Place<'a>> {
        if let Some(dir) = self.v1.get(v1_name) {
            return Some(Place::V1(dir));
        }
        match self.unified {
            Some(dir) if self.unified_controllers.iter().any(|c| c == v2_name) => {
                Some(Place::V2(dir))
            }
            _ => None,
        }
    }

    pub fn require(&self, v1_name: &str, v2_name: &str) -> Result<Place<'a>, CgroupError> {
        self.place(v1_name, v2_name).ok_or_else(|| {
            self.missing(if self.layout == Layout::Unified {
                v2_name
            } else {
                v1_name
            })
        })
    }

    pub fn missing(&self, controller: &str) -> CgroupError {
        CgroupError::MissingController {
            controller: controller.to_string(),
            path: self.shown_path(),
        }
    }

    /// The path named in errors: the unified leaf, else the first v1 directory.
    pub fn shown_path(&self) -> PathBuf {
        self.unified
            .map(Path::to_path_buf)
            .or_else(|| self.v1.values().next().cloned())
            .unwrap_or_default()
    }
}

/* A CUDA driver-API check with no CUDA toolkit: libcuda.so.1 is dlopen()ed, the kernel
 * is PTX embedded below (JIT-compiled by the driver). Allocates memory, launches a kernel
 * that writes i*2 into an array, copies it back and checks it. Prints "CUDA OK <gpu name>"
 * and exits 0, or prints the failing call and exits 1. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext, *CUmodule, *CUfunction, *CUstream;
typedef unsigned long long CUdeviceptr;

static const char *ptx =
    ".version 7.0\n"
    ".target sm_50\n"
    ".address_size 64\n"
    ".visible .entry twice(.param .u64 out, .param .u32 n) {\n"
    "  .reg .u32 %r<5>; .reg .u64 %rd<4>; .reg .pred %p;\n"
    "  ld.param.u64 %rd1, [out]; ld.param.u32 %r1, [n];\n"
    "  mov.u32 %r2, %ctaid.x; mov.u32 %r3, %ntid.x; mov.u32 %r4, %tid.x;\n"
    "  mad.lo.u32 %r2, %r2, %r3, %r4;\n"
    "  setp.ge.u32 %p, %r2, %r1; @%p ret;\n"
    "  cvta.to.global.u64 %rd1, %rd1; mul.wide.u32 %rd2, %r2, 4; add.u64 %rd3, %rd1, %rd2;\n"
    "  shl.b32 %r3, %r2, 1; st.global.u32 [%rd3], %r3;\n"
    "  ret;\n"
    "}\n";

#define SYM(name, ret, args) typedef ret(*name##_t) args; name##_t name = (name##_t)dlsym(h, #name); \
    if (!name) { printf("missing %s\n", #name); return 1; }
#define CHECK(call) do { CUresult r = (call); if (r != 0) { printf("%s failed: %d\n", #call, r); return 1; } } while (0)

int main(void) {
    void *h = dlopen("libcuda.so.1", RTLD_NOW);
    if (!h) { printf("dlopen libcuda.so.1: %s\n", dlerror()); return 1; }
    SYM(cuInit, CUresult, (unsigned));
    SYM(cuDeviceGet, CUresult, (CUdevice *, int));
    SYM(cuDeviceGetName, CUresult, (char *, int, CUdevice));
    SYM(cuCtxCreate_v2, CUresult, (CUcontext *, unsigned, CUdevice));
    SYM(cuModuleLoadData, CUresult, (CUmodule *, const void *));
    SYM(cuModuleGetFunction, CUresult, (CUfunction *, CUmodule, const char *));
    SYM(cuMemAlloc_v2, CUresult, (CUdeviceptr *, size_t));
    SYM(cuMemcpyDtoH_v2, CUresult, (void *, CUdeviceptr, size_t));
    SYM(cuLaunchKernel, CUresult, (CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream, void **, void **));
    SYM(cuCtxSynchronize, CUresult, (void));
    enum { N = 1 << 20 };
    CUdevice dev; CUcontext ctx; CUmodule mod; CUfunction fn; CUdeviceptr d;
    char name[256];
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuDeviceGetName(name, sizeof name, dev));
    CHECK(cuCtxCreate_v2(&ctx, 0, dev));
    CHECK(cuModuleLoadData(&mod, ptx));
    CHECK(cuModuleGetFunction(&fn, mod, "twice"));
    CHECK(cuMemAlloc_v2(&d, N * sizeof(unsigned)));
    unsigned n = N;
    void *args[] = { &d, &n };
    CHECK(cuLaunchKernel(fn, N / 256, 1, 1, 256, 1, 1, 0, 0, args, 0));
    CHECK(cuCtxSynchronize());
    unsigned *host = malloc(N * sizeof(unsigned));
    CHECK(cuMemcpyDtoH_v2(host, d, N * sizeof(unsigned)));
    for (unsigned i = 0; i < N; i++) {
        if (host[i] != 2 * i) { printf("wrong value at %u: %u\n", i, host[i]); return 1; }
    }
    printf("CUDA OK %s\n", name);
    return 0;
}

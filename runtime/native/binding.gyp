{
  "targets": [
    {
      "target_name": "kernel_avx2",
      "type": "static_library",
      "sources": ["kernel.cc"],
      "cflags": ["-O3", "-fPIC", "-mavx2", "-mfma", "-ffp-contract=fast"]
    },
    {
      "target_name": "kernel_avx512",
      "type": "static_library",
      "sources": ["kernel.cc"],
      "defines": ["MDT_AVX512"],
      "cflags": ["-O3", "-fPIC", "-mavx512f", "-mavx2", "-mfma", "-ffp-contract=fast"]
    },
    {
      "target_name": "pointwise_avx2",
      "type": "static_library",
      "sources": ["pointwise.cc"],
      "cflags": ["-O3", "-fPIC", "-mavx2", "-mfma", "-ffast-math"]
    },
    {
      "target_name": "random_avx2",
      "type": "static_library",
      "sources": ["random_avx2.cc"],
      "cflags": ["-O3", "-fPIC", "-mavx2", "-mfma", "-ffp-contract=off"]
    },
    {
      "target_name": "mdt_native",
      "sources": ["addon.cc", "random.cc"],
      "dependencies": ["kernel_avx2", "kernel_avx512", "pointwise_avx2", "random_avx2"],
      "cflags": ["-O3", "-ffp-contract=off"],
      "libraries": ["-pthread", "-lmvec"],
      "ldflags": ["-pthread"]
    }
  ]
}

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
      "target_name": "mdt_native",
      "sources": ["addon.cc"],
      "dependencies": ["kernel_avx2", "kernel_avx512"],
      "cflags": ["-O3"],
      "libraries": ["-pthread"],
      "ldflags": ["-pthread"]
    }
  ]
}

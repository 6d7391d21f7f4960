#!/usr/bin/env bash
# Prints llama.cpp CMAKE_ARGS enabling exactly the x86 extensions this CPU has, never AMX
# (ggml_backend_amx_mul_mat crashes on our Xeons) and no native autodetection.
set -euo pipefail
flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
args="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
on() { [[ $flags == *" $1 "* ]]; }
on avx && args+=" -DGGML_AVX=ON"
on avx2 && args+=" -DGGML_AVX2=ON"
on fma && args+=" -DGGML_FMA=ON"
on f16c && args+=" -DGGML_F16C=ON"
on avx512f && args+=" -DGGML_AVX512=ON"
on avx512_vnni && args+=" -DGGML_AVX512_VNNI=ON"
on avx512_bf16 && args+=" -DGGML_AVX512_BF16=ON"
on avx512vbmi && args+=" -DGGML_AVX512_VBMI=ON"
on avx_vnni && args+=" -DGGML_AVX_VNNI=ON"
echo "$args"

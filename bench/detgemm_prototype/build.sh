#!/bin/bash
# Builds detgemm_op.so (TF custom op) and libdetgemm.so (plain C ABI, same kernel).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-/work/main/.venv/bin/python}
TF_CFLAGS=$(TF_CPP_MIN_LOG_LEVEL=3 $PY -c "import tensorflow as tf; print(' '.join(tf.sysconfig.get_compile_flags()))")
# -isystem instead of -I: silences ~20 deprecation/sign-compare warnings coming from TF/absl headers
TF_CFLAGS=${TF_CFLAGS//-I\//-isystem \/}
TF_LFLAGS=$(TF_CPP_MIN_LOG_LEVEL=3 $PY -c "import tensorflow as tf; print(' '.join(tf.sysconfig.get_link_flags()))")
OPT="-O3 -ffp-contract=off -fPIC -Wall -Wextra -Wno-unused-parameter"
set -x
g++ $OPT -shared $TF_CFLAGS detgemm_op.cc detgemm_kernel.cc -o detgemm_op.so $TF_LFLAGS
g++ $OPT -shared -std=c++17 detgemm_kernel.cc detgemm_capi.cc -o libdetgemm.so

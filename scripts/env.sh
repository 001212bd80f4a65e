# Sourced by the build scripts: compiler cache and thread settings shared by builds and tests.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# A clean clone in another folder reuses the objects of earlier builds: paths are hashed
# relative to the checkout, and the precompiled LibTorch header is cacheable.
export CCACHE_BASEDIR="$root"
export CCACHE_SLOPPINESS="pch_defines,time_macros,include_file_mtime,include_file_ctime"
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-20G}"
export CCACHE_NOHASHDIR=1
jobs=$(nproc)

# Sourced by the build scripts (build.sh, build_tsan.sh, build_asan.sh, build_fuzz.sh): sets `launcher` to the CMake
# option that compiles through ccache when it is installed (scripts/install.sh installs it), or to nothing.
#
# One cache serves every clone: CCACHE_BASEDIR makes ccache hash (and compile) paths under the source tree relative
# to the build folder, and CCACHE_NOHASHDIR leaves the build folder's own path out of the hash, so a fresh clone at
# another path (CI's) finds the objects an earlier build of the same sources made. A hit needs the same compiler,
# flags and preprocessed source, so it is the object file the compiler would have made, except that its debug
# info may name the other clone's build folder (gdb's `directory` points it at the sources). CCACHE_DISABLE=1
# compiles everything from cold.
launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=)
if command -v ccache >/dev/null 2>&1; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$(pwd -P)}"
  export CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-true}"
fi

"""Builds the Python module kvshare with the project's CMake build, for `pip install .`:

    python3 -m venv --system-site-packages .venv && . .venv/bin/activate
    pip install --no-build-isolation --no-index .

Only Debian packages are needed (scripts/install.sh installs them): setuptools, wheel, pybind11-dev,
python3-dev, cmake, ninja-build, g++. The CMake build lives in build-python/ (kept, so a second install
is incremental; compiled through ccache when it is installed); CMAKE_BUILD_PARALLEL_LEVEL sets its jobs
(default 2).

KVSHARE_CMAKE_BUILD_DIR=path/to/build reuses a CMake build folder of this source tree that is already configured
(scripts/build.sh's build/, with the Python module on) instead: only its target kvshare_python is brought up to
date there, with the folder's own options, so nothing is compiled twice (the pip-install test does this).
"""
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = pathlib.Path(__file__).resolve().parent


class CMakeExtension(Extension):
    """An extension that CMake builds (the target kvshare_python) rather than setuptools."""

    def __init__(self, name: str, target: str):
        super().__init__(name, sources=[])
        self.target = target


class CMakeBuild(build_ext):
    def build_extension(self, ext: CMakeExtension) -> None:
        existing = os.environ.get("KVSHARE_CMAKE_BUILD_DIR")
        build_dir = reuse_build_dir(existing) if existing else configure_own_build_dir()
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2")
        subprocess.run(["cmake", "--build", str(build_dir), "--target", ext.target, "-j", jobs], check=True)
        suffix = sysconfig.get_config_var("EXT_SUFFIX")  # e.g. .cpython-311-x86_64-linux-gnu.so
        built = build_dir / "python" / "kvshare" / f"_kvshare{suffix}"
        if not built.exists():
            raise RuntimeError(f"the CMake build made no {built.name} in {built.parent} (a module for another Python?); "
                               f"build it with this interpreter ({sys.executable})")
        dest = pathlib.Path(self.get_ext_fullpath(ext.name))
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, dest)


def configure_own_build_dir() -> pathlib.Path:
    """build-python/<python tag>, configured for the module alone (ccache when installed)."""
    build_dir = ROOT / "build-python" / sys.implementation.cache_tag
    build_dir.mkdir(parents=True, exist_ok=True)
    configure = ["cmake", "-S", str(ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                 "-DKVSHARE_BUILD_TESTS=OFF", "-DKVSHARE_BUILD_PYTHON=ON", "-DKVSHARE_REQUIRE_PYTHON=ON",
                 f"-DPython3_EXECUTABLE={sys.executable}"]
    if shutil.which("ninja") and not (build_dir / "Makefile").exists():
        configure += ["-G", "Ninja"]
    if shutil.which("ccache"):
        configure += ["-DCMAKE_CXX_COMPILER_LAUNCHER=ccache", "-DCMAKE_C_COMPILER_LAUNCHER=ccache"]
    subprocess.run(configure, check=True)
    return build_dir


def reuse_build_dir(path: str) -> pathlib.Path:
    """KVSHARE_CMAKE_BUILD_DIR: an existing CMake build folder of this source tree; never reconfigured."""
    build_dir = pathlib.Path(path).resolve()
    cache = build_dir / "CMakeCache.txt"
    if not cache.exists():
        raise RuntimeError(f"KVSHARE_CMAKE_BUILD_DIR={path} is not a configured CMake build folder (no CMakeCache.txt); "
                           f"run scripts/build.sh, or unset it to build in build-python/")
    home = next((line.split("=", 1)[1].strip() for line in cache.read_text().splitlines()
                 if line.startswith("CMAKE_HOME_DIRECTORY:")), "")
    if pathlib.Path(home).resolve() != ROOT:
        raise RuntimeError(f"KVSHARE_CMAKE_BUILD_DIR={path} is the build folder of {home}, not of {ROOT}")
    return build_dir

setup(
    ext_modules=[CMakeExtension("kvshare._kvshare", target="kvshare_python")],
    cmdclass={"build_ext": CMakeBuild},
    options={"build": {"build_base": "build-python/setuptools"}, "egg_info": {"egg_base": "build-python"}},
)

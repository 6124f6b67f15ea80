"""Builds the Python module kvshare with the project's CMake build, for `pip install .`:

    python3 -m venv --system-site-packages .venv && . .venv/bin/activate
    pip install --no-build-isolation --no-index .

Only Debian packages are needed (scripts/install.sh installs them): setuptools, wheel, pybind11-dev,
python3-dev, cmake, ninja-build, g++. The CMake build lives in build-python/ (kept, so a second install
is incremental); CMAKE_BUILD_PARALLEL_LEVEL sets its jobs (default 2).
"""
import os
import pathlib
import shutil
import subprocess
import sys

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
        build_dir = ROOT / "build-python" / sys.implementation.cache_tag
        build_dir.mkdir(parents=True, exist_ok=True)
        configure = ["cmake", "-S", str(ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                     "-DKVSHARE_BUILD_TESTS=OFF", "-DKVSHARE_BUILD_PYTHON=ON", "-DKVSHARE_REQUIRE_PYTHON=ON",
                     f"-DPython3_EXECUTABLE={sys.executable}"]
        if shutil.which("ninja") and not (build_dir / "Makefile").exists():
            configure += ["-G", "Ninja"]
        subprocess.run(configure, check=True)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2")
        subprocess.run(["cmake", "--build", str(build_dir), "--target", ext.target, "-j", jobs], check=True)
        built = sorted((build_dir / "python" / "kvshare").glob("_kvshare*.so"))
        if not built:
            raise RuntimeError(f"the CMake build made no _kvshare module in {build_dir}/python/kvshare")
        dest = pathlib.Path(self.get_ext_fullpath(ext.name))
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built[-1], dest)


setup(
    ext_modules=[CMakeExtension("kvshare._kvshare", target="kvshare_python")],
    cmdclass={"build_ext": CMakeBuild},
    options={"build": {"build_base": "build-python/setuptools"}, "egg_info": {"egg_base": "build-python"}},
)

"""Builds the _tqds extension (and the tq/dscli/ds_worker programs) with the
project's CMake, for `pip install --no-build-isolation .` (works offline: it
needs only the Debian packages that scripts/setup.sh installs).

Everything the build writes stays under build-pip/ (CMake's tree and
setuptools' staging dirs), never under another build*/ directory.

Environment:
  TQDS_CMAKE_BUILD_DIR  CMake build directory to use instead of build-pip/.
                        If it is already configured (has CMakeCache.txt) it
                        is built as configured, not reconfigured: point it at
                        an existing build to skip a full rebuild.
  TQDS_BUILD_JOBS       parallel build jobs (default: the number of CPUs).
"""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
PIP_BUILD = ROOT / "build-pip"
PROGRAMS = ("tq", "dscli", "ds_worker")


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


def _cmake_build_dir() -> Path:
    env = os.environ.get("TQDS_CMAKE_BUILD_DIR")
    return Path(env).resolve() if env else PIP_BUILD / "cmake"


def _configure(build_dir: Path) -> None:
    if (build_dir / "CMakeCache.txt").exists():
        return  # an existing build: keep its configuration (and its generator)
    cmd = ["cmake", "-S", str(ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
           f"-DPython_EXECUTABLE={sys.executable}", "-DTQDS_BUILD_TESTS=OFF", "-DTQDS_BUILD_BENCH=OFF"]
    if shutil.which("ninja"):
        cmd += ["-G", "Ninja"]
    subprocess.check_call(cmd)


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build_dir = _cmake_build_dir()
        _configure(build_dir)
        jobs = os.environ.get("TQDS_BUILD_JOBS") or str(os.cpu_count() or 2)
        subprocess.check_call(["cmake", "--build", str(build_dir), "-j", jobs, "--target", "_tqds", *PROGRAMS])
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        built = build_dir / "python" / f"_tqds{suffix}"
        if not built.exists():
            found = sorted(p.name for p in (build_dir / "python").glob("_tqds*.so"))
            sys.exit(f"setup.py: {built} was not built for this Python ({sys.executable}); "
                     f"{build_dir} holds {found or 'no _tqds'} (is pybind11-dev installed?)")
        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built, target)
        # The programs ship inside the package; the `tq` and `dscli` console
        # scripts (pyproject.toml) exec them, and transfer_queue starts the
        # bundled `tq` for its controller.
        bindir = target.parent / "datasystem" / "_bin"
        bindir.mkdir(parents=True, exist_ok=True)
        for prog in PROGRAMS:
            shutil.copy2(build_dir / "bin" / prog, bindir / prog)


# setuptools' own staging (build/lib.*, build/bdist.*, *.egg-info) would
# otherwise land in build/, the developers' CMake tree, and in python/.
STAGING = PIP_BUILD / "setuptools"
STAGING.mkdir(parents=True, exist_ok=True)  # egg_info wants its base to exist

setup(
    ext_modules=[CMakeExtension("_tqds")],
    cmdclass={"build_ext": CMakeBuild},
    options={"build": {"build_base": str(STAGING)}, "egg_info": {"egg_base": str(STAGING)}},
)

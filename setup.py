"""Ships the repository's templates/, filters/ and examples/ inside the wheel as envoyext/templates,
envoyext/filters and envoyext/examples (envoyext.paths finds them there, or at the top of a source checkout)."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
DATA = ("templates", "filters", "examples")


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        for name in DATA:
            target = Path(self.build_lib) / "envoyext" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(HERE / name, target,
                            ignore=shutil.ignore_patterns("build", "__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildWithLibrary})

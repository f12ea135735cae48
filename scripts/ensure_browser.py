"""Make sure the browser tests have Debian's headless Chromium and its ChromeDriver.

Run by `make test` before the suite. Installs the `chromium` and `chromium-driver` packages
with apt-get when they are missing (as root, or through sudo). Where neither is possible it
stops with the command to run, rather than letting the browser tests fail obscurely.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

PACKAGES = ["chromium", "chromium-driver"]
BINARIES = {"chromium": "/usr/bin/chromium", "chromedriver": "/usr/bin/chromedriver"}


def missing() -> list[str]:
    return [name for name, path in BINARIES.items() if not os.access(path, os.X_OK)]


def install() -> None:
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            sys.exit(
                "The browser tests need Debian's chromium and chromium-driver; install them "
                f"as root: apt-get install -y {' '.join(PACKAGES)}"
            )
        prefix = ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"installing {' '.join(PACKAGES)} for the browser tests ...", flush=True)
    subprocess.run([*prefix, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        [*prefix, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def main() -> int:
    if not missing():
        return 0
    if shutil.which("apt-get") is None:
        sys.exit(
            f"The browser tests need {', '.join(BINARIES.values())}: install Chromium and "
            "ChromeDriver of the same version there."
        )
    try:
        install()
    except subprocess.CalledProcessError as error:
        sys.exit(f"installing the browser failed ({error}); run: apt-get install -y chromium")
    if still := missing():
        sys.exit(f"after the install, still missing: {', '.join(still)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

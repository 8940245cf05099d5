"""pam_toopher: push two-factor login for Linux servers (PAM, sshd, sudo)."""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
VERSION = re.search(r'^__version__ = "([^"]+)"',
                    (HERE / "pam_toopher" / "__init__.py").read_text(), re.M).group(1)

setup(
    name="pam_toopher",
    version=VERSION,
    description="Toopher push two-factor authentication for PAM (sshd, sudo)",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["pam_toopher", "pam_toopher.*"]),
    # The phone web app's pages, served by toopher-server under /app/.
    package_data={"pam_toopher.server": ["static/*"]},
    # oauthlib is named because the server verifies signatures with it directly.
    install_requires=["requests>=2.25", "requests-oauthlib>=1.3", "oauthlib>=3.1"],
    # toopher-server's phone web app (--public-url): passkeys and QR codes.
    # fido2 2.x changed the verification API this code uses.
    # "push": Web Push notifications to the phones (optional; not in Debian 12).
    extras_require={"web": ["fido2>=0.9.1,<2", "segno>=1.4"],
                    "push": ["pywebpush>=1.14"]},
    entry_points={
        "console_scripts": [
            "toopher-pam=pam_toopher.cli:main",
            "toopher-server=pam_toopher.server.cli:main",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: System :: Systems Administration :: Authentication/Directory",
        "Operating System :: POSIX :: Linux",
    ],
)

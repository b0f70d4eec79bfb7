"""Stands in for the pip bootstrap script ansible-test downloads from a host this machine cannot reach.

ansible-test looks for ~/.ansible/test/cache/get_pip_<version>.py before downloading; this file is
copied there. It installs the bundled pip with ensurepip, then the requested pip from the package
registry.
"""

import ensurepip
import os
import subprocess
import sys

ensurepip.bootstrap()
env = dict(os.environ)
env.pop("PIP_CONFIG_FILE", None)  # ensurepip points it at /dev/null, which would hide the registry settings
arguments = [argument for argument in sys.argv[1:] if argument not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", *arguments], env=env))

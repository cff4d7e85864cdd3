from setuptools import find_packages, setup

setup(
    name="s3prl-plugins",
    version="0.1.0",
    packages=find_packages(include=["s3prl_plugins", "s3prl_plugins.*"]),
    python_requires=">=3.9",
)

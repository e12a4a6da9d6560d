"""Packaging for pandapush.

``twisted.plugins`` is listed by hand: ``find_packages()`` cannot see it because the
dropin folder deliberately has no ``__init__.py`` (one there would shadow Twisted's own).
"""

from setuptools import find_packages, setup

setup(
    name="pandapush",
    version="0.1.0",
    description="Multi-tenant real-time publish/subscribe service for the web, speaking Bayeux",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["pandapush", "pandapush.*"]) + ["twisted.plugins"],
    package_data={
        "pandapush": ["py.typed", "web/static/*", "web/static/**/*", "storage/migrations/*/*.sql"],
        "twisted.plugins": ["pandapush_plugin.py"],
    },
    include_package_data=True,
    install_requires=[
        "twisted[tls]>=24.3",
        "autobahn>=23.6",
        "klein>=23.5",
        "txredisapi>=1.4.10",
        "pyjwt>=2.8",
        "zope.interface>=6",
        # orjson: a C JSON codec; the delivery path serialises every message once and
        # json.dumps was the largest single cost in profiles of fan-out.
        "orjson>=3.9",
        "prometheus-client>=0.20",
        "psycopg2-binary>=2.9",
        "treq>=23.11",
    ],
    extras_require={
        "test": ["hypothesis>=6.100", "playwright>=1.40", "mypy>=1.10", "mypy-zope>=1.0.5", "ruff>=0.5"],
    },
    entry_points={"console_scripts": ["pandapush=pandapush.cli:main"]},
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: MIT License",
    ],
)

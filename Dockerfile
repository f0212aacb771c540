# The managed plugin's rootfs: Python, pylog and its dependencies, nothing else.
#
# `make plugin` builds it (see docs/managed-plugin.md): the wheelhouse is made on the host by
# scripts/build-wheelhouse.sh, so nothing here needs the network. BASE_IMAGE is any image with
# CPython 3.11 as `python3` and a glibc the wheelhouse was chosen for (2.36: Debian bookworm):
# the official python:3.11-slim-bookworm, or the debootstrap one scripts/build-base.sh makes
# where no registry is reachable. pip is run from its wheel and never lands in the image.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS install
ENV PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
COPY build/wheelhouse/tools/ /wheelhouse/tools/
COPY build/wheelhouse/deps/ /wheelhouse/deps/
# Dependencies first: this layer stays cached while only pylog's own code changes.
RUN set -eu; \
    python3 -m venv --without-pip /opt/pylog; \
    for w in /wheelhouse/tools/pip-*.whl; do ln -s "$w" /wheelhouse/pip.whl; done; \
    /opt/pylog/bin/python /wheelhouse/pip.whl/pip install -q \
        --find-links /wheelhouse/deps --only-binary=:all: -r /wheelhouse/deps/requirements.txt
COPY build/wheelhouse/pylog/ /wheelhouse/pylog/
# Then check that the result works on this base: every dependency there (pip check), every
# compiled extension loads against the base's glibc (aiohttp, multidict, yarl and others would
# otherwise fall back to pure Python without a word; pylog's own parse=json module too), protobuf
# runs its C core, pylog starts.
RUN set -eu; \
    /opt/pylog/bin/python /wheelhouse/pip.whl/pip install -q --no-deps /wheelhouse/pylog/*.whl; \
    /opt/pylog/bin/python /wheelhouse/pip.whl/pip check; \
    /opt/pylog/bin/python -c 'if True: \
        import importlib, pathlib, sysconfig; \
        site = pathlib.Path(sysconfig.get_paths()["purelib"]); \
        sos = sorted(site.rglob("*.so")); \
        names = [".".join(f.relative_to(site).parts[:-1] + (f.name.split(".")[0],)) for f in sos]; \
        [importlib.import_module(n) for n in names]; \
        from google.protobuf.internal import api_implementation as impl; \
        assert impl.Type() == "upb", impl.Type(); \
        from pylog import jsonpack; \
        assert jsonpack.COMPILED, "pylog._jsonpack is missing"; \
        print(f"{len(names)} compiled extensions load; protobuf: {impl.Type()}")'; \
    /opt/pylog/bin/pylog --version

FROM ${BASE_IMAGE}
COPY --from=install /opt/pylog /opt/pylog
ENV PATH=/opt/pylog/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# config.json's entrypoint is what runs in the plugin; this is for `docker run IMAGE --help`.
ENTRYPOINT ["/opt/pylog/bin/pylog"]
CMD ["serve"]

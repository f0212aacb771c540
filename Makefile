# pylog as a managed Docker plugin: `make plugin` builds and enables it (docs/managed-plugin.md).
#
#   make plugin                                     base made with debootstrap (no registry needed)
#   make plugin BASE_IMAGE=python:3.11-slim-bookworm
#   make plugin PLUGIN_NAME=pylog-e2e               another name (the tests use one)
#   make plugin ENABLE=0                            create it, leave it disabled
#   make plugin FORCE=1                             replace it even if dockerd says "in use"
#   make clean

PLUGIN_NAME ?= pylog
LOCAL_BASE  := pylog-base:bookworm
BASE_IMAGE  ?= $(LOCAL_BASE)
# The wheelhouse is chosen for the base's Python and glibc (bookworm: 3.11, 2.36).
PY_VERSION  ?= 3.11
GLIBC       ?= 2.36
ENABLE      ?= 1
FORCE       ?= 0

WHEEL_SOURCES := pyproject.toml scripts/build-wheelhouse.sh build/wheelhouse.params \
                 $(shell find plugin/pylog -type f -not -path '*/__pycache__/*' -not -name '*.pyc')

.PHONY: plugin wheelhouse base clean always

plugin: wheelhouse base
	PLUGIN_NAME='$(PLUGIN_NAME)' BASE_IMAGE='$(BASE_IMAGE)' ENABLE='$(ENABLE)' FORCE='$(FORCE)' \
	  $(if $(BUILD_DIR),BUILD_DIR='$(BUILD_DIR)') bash scripts/build-plugin.sh

wheelhouse: build/wheelhouse.stamp

build/wheelhouse.stamp: $(WHEEL_SOURCES)
	PY_VERSION='$(PY_VERSION)' GLIBC='$(GLIBC)' bash scripts/build-wheelhouse.sh
	touch $@

# Rewritten only when the target changes, so that a different PY_VERSION/GLIBC rebuilds the wheels.
build/wheelhouse.params: always
	@mkdir -p build
	@echo '$(PY_VERSION) $(GLIBC)' | cmp -s - $@ || echo '$(PY_VERSION) $(GLIBC)' >$@

# Only the local default is built here (debootstrap + docker import, cached as an image);
# any other BASE_IMAGE is pulled by `docker build` as usual.
base:
ifeq ($(BASE_IMAGE),$(LOCAL_BASE))
	bash scripts/build-base.sh '$(LOCAL_BASE)'
endif

clean:
	rm -rf --one-file-system build

#!/usr/bin/env bash
# Host side of guest/ci.sh: what pylog.sh and e2e.sh need (their own prepare scripts), the lanes'
# e2e subset, and the managed plugin's directory (config.json + rootfs), built here with the
# host's dockerd (`make plugin`, not enabled, then removed from the host's dockerd again).
# Usage: ci.prepare.sh debian-12|debian-13 SHARE_DIR
set -euo pipefail
lane="$1" share="$2"
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"

# The lanes' subset (about 13 tests: TCG runs a test in 25-50 s): docker logs parity,
# namespaces (host flags, sharing, short-lived containers, recycled inodes, keys across a
# restart), kill -9 and restart, the fluentd and syslog sinks, and the managed plugin.
e2e=tests/e2e
export PYLOG_VM_E2E_TESTS="${PYLOG_VM_E2E_TESTS:-
  $e2e/test_docker_logs.py::test_stopped_container_matches_json_file
  $e2e/test_docker_logs.py::test_running_container_matches_json_file
  $e2e/test_namespaces.py::test_identities_are_the_containers_own
  $e2e/test_namespaces.py::test_host_modes_show_is_host_for_exactly_those_types[modes4]
  $e2e/test_namespaces.py::test_shared_network_namespace_names_both
  $e2e/test_namespaces.py::test_short_lived_rm_containers_get_their_namespaces_20_of_20
  $e2e/test_namespaces.py::test_recycled_inodes_still_get_different_keys
  $e2e/test_namespaces.py::test_keys_survive_a_restart_of_pylog
  $e2e/test_restart.py::test_kill_9_mid_stream_then_restart_loses_nothing
  $e2e/test_sink_fluentd.py::test_same_records_as_dockers_fluentd_driver
  $e2e/test_sink_fluentd.py::test_fluentd_options_of_every_docker_version_are_accepted
  $e2e/test_sink_syslog.py::test_same_messages_as_dockers_syslog_driver
  $e2e/test_sink_syslog.py::test_structured_data_has_the_containers_namespace_inodes
  $e2e/test_managed_plugin.py::test_docker_logs_matches_json_file
  $e2e/test_managed_plugin.py::test_namespace_identities_are_the_containers[default]}"

if [ "$lane" = debian-13 ]; then  # Docker 26-29's behaviour, on the lane with dockerd 26
  PYLOG_VM_E2E_TESTS+="
  tests/test_frames.py::test_frames_with_docker_29_attrs_are_read_like_any_other
  tests/test_logreader.py::test_frames_with_docker_29_attrs_are_stored_and_read_back
  tests/test_record.py::test_a_private_time_namespace_as_docker_29_5_gives_is_not_the_hosts
  tests/test_sink_fluentd.py::test_an_ack_that_does_not_come_is_an_error_after_the_read_timeout"
fi

# The plugin first: `make plugin` builds the wheelhouse for the plugin's own Python (its base
# image's), and the prepare scripts below rebuild it for the guest's.
name="pylog-lane-$$"
mkdir -p "$repo/build"
plugin_dir="$(mktemp -d)/plugin"
(cd "$repo" && flock 9 && make plugin PLUGIN_NAME="$name" BUILD_DIR="$plugin_dir" ENABLE=0 >&2
 ) 9>"$repo/build/.wheelhouse.lock"
docker plugin rm -f "$name" >/dev/null
docker image rm "pylog-plugin-rootfs:$name" >/dev/null 2>&1 || true
# One file: the guest reads 9p file by file, and the rootfs's 6,700 small files took 3 minutes.
tar -C "$plugin_dir" -cf "$share/plugin.tar" .
rm -rf --one-file-system "$(dirname "$plugin_dir")"

bash "$here/e2e.prepare.sh" "$lane" "$share"  # its wheelhouse is also pylog.prepare.sh's
cp "$here/pylog.sh" "$here/smoke.sh" "$here/pylog.service" "$here/e2e.sh" "$here/facts.py" \
  "$share/"
if [ "$lane" = debian-13 ]; then  # guest/readme.sh: the checkout as it is (uncommitted work too)
  git -C "$repo" ls-files -co --exclude-standard -z | tar -C "$repo" --null -T - -cf "$share/checkout.tar"
  cp /etc/ssl/certs/ca-certificates.crt "$share/ca.crt"
  cp "$here/readme.sh" "$share/"
fi

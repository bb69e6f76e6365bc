"""
Running the gateway in production: what operators' tools see of it.

- `cmegw.ops.systemd`: sd_notify (READY, STATUS, RELOADING, STOPPING, WATCHDOG) and
  SIGHUP to reload the configuration file;
- `cmegw.ops.metrics`: the Prometheus text format at ``/metrics``;
- `cmegw.ops.trace`: the traffic trace of a line (ring buffer, M-Bus frames labelled,
  text and JSON downloads, live listeners);
- `cmegw.ops.graphs`: the last hour of traffic, errors, connections and each line's bus
  (transactions, silent and garbled answers, busy time) as server-drawn SVG;
- `cmegw.ops.chart`: the one SVG line chart with axes of values and local times that the
  graphs and a meter's history draw with.

Everything here only reads the published state (`cmegw.state.GatewayState`) and changes
the gateway through its service (``set_trace``, ``reload_config``).
"""

"""
Scheduled readouts and their delivery.

- `reading`: `StoredReading` (one readout as kept and delivered), `TargetStatus`
  and the `DeliveryTarget` interface that MQTT and HTTP implement.
- `meterlist`: the meter list's CSV import and export, adopting scan results.
- `scheduler`: reads each enabled meter at its interval, aligned to the clock.
- `store`: the SQLite reading store with one delivery queue per target.
- `delivery`: the forwarder that drains a target's queue in time order.
- `payload`, `discovery`: the JSON of a reading and Home Assistant's discovery configs.
- `mqtt`, `push`: the MQTT (paho-mqtt on the reactor) and HTTP POST targets.
- `service`: `ReadoutService`, which composes them and publishes `ReadoutView`.
"""

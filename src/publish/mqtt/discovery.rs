//! Home Assistant MQTT discovery: one retained config message per entity.

use serde_json::json;

use super::SinkOptions;

/// Home Assistant discovery messages: (topic, retained config).
pub fn ha_discovery(o: &SinkOptions) -> Vec<(String, serde_json::Value)> {
    let dev = &o.device_id;
    let device = json!({
        "identifiers": [format!("veriframe_{dev}")],
        "name": dev,
        "manufacturer": "Veriframe",
        "model": "capture point",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let avail = json!([{
        "topic": o.topic("available"),
        "payload_available": "online",
        "payload_not_available": "offline",
        "value_template": "{{ 'online' if value == 'online' else 'offline' }}",
    }]);
    let mk = |component: &str, object: &str, mut cfg: serde_json::Value| {
        if let Some(m) = cfg.as_object_mut() {
            m.insert(
                "unique_id".into(),
                json!(format!("veriframe_{dev}_{object}")),
            );
            m.insert(
                "object_id".into(),
                json!(format!("veriframe_{dev}_{object}")),
            );
            m.insert("device".into(), device.clone());
            m.insert("availability".into(), avail.clone());
        }
        (
            format!("{}/{component}/{dev}/{object}/config", o.ha_prefix),
            cfg,
        )
    };
    vec![
        mk(
            "binary_sensor",
            "attack",
            json!({
                "name": "Attack detected",
                "device_class": "safety",
                "state_topic": o.topic("status"),
                "value_template": "{{ 'ON' if value_json.attack else 'OFF' }}",
            }),
        ),
        mk(
            "binary_sensor",
            "camera",
            json!({
                "name": "Camera",
                "device_class": "connectivity",
                "state_topic": o.topic("status"),
                "value_template": "{{ 'ON' if value_json.camera == 'ok' else 'OFF' }}",
            }),
        ),
        mk(
            "sensor",
            "fps",
            json!({
                "name": "Frame rate",
                "unit_of_measurement": "fps",
                "state_class": "measurement",
                "state_topic": o.topic("stats"),
                "value_template": "{{ value_json.fps | round(1) }}",
            }),
        ),
        mk(
            "sensor",
            "pad_score",
            json!({
                "name": "Last PAD score",
                "state_class": "measurement",
                "state_topic": o.topic("status"),
                "value_template": "{{ value_json.last_pad_score if value_json.last_pad_score is not none else 'unknown' }}",
            }),
        ),
    ]
}

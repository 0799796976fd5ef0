//! `spec.qos` between the API message and the CRD type (both ways: the request brings it, the
//! status reports the QoS in force).

use spindle_agent_api::v1 as pb;
use spindle_crds::TargetQos;

/// The Target's QoS from a request (the caller validates it with the rest of the Target).
pub fn from_pb(q: pb::Qos) -> TargetQos {
    TargetQos {
        weight: q.weight,
        read_iops: q.read_iops,
        write_iops: q.write_iops,
        read_bytes_per_second: q.read_bytes_per_second,
        write_bytes_per_second: q.write_bytes_per_second,
        burst_seconds: q.burst_seconds,
    }
}

/// The QoS in force, for the status.
pub fn to_pb(q: &TargetQos) -> pb::Qos {
    pb::Qos {
        weight: q.weight,
        read_iops: q.read_iops,
        write_iops: q.write_iops,
        read_bytes_per_second: q.read_bytes_per_second,
        write_bytes_per_second: q.write_bytes_per_second,
        burst_seconds: q.burst_seconds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_field_and_absence() {
        let q = TargetQos {
            weight: Some(7),
            read_iops: Some(1),
            write_iops: None,
            read_bytes_per_second: Some(4096),
            write_bytes_per_second: Some(1 << 30),
            burst_seconds: Some(0),
        };
        assert_eq!(from_pb(to_pb(&q)), q);
        assert_eq!(from_pb(pb::Qos::default()), TargetQos::default());
    }
}

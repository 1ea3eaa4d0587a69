//! Owns the conversion of alarm requests and answers between etcd's messages and the core's
//! alarms, for both transports (etcd: v3_server.go `Alarm`, alarms.go).

use watchkv::alarm::{AlarmMember, AlarmType};

use super::pb::etcdserverpb as pb;
use super::ApiError;
use crate::protocol::Alarm;

/// The request an `AlarmRequest` makes; `None` when etcd 3.5 does nothing and answers no
/// alarms (activating or deactivating `NONE`; etcd 3.4 stored an activated `NONE`,
/// docs/etcd-semantics.md §12 item 11).
///
/// # Errors
/// An unknown action or alarm number.
pub fn alarm_request(r: pb::AlarmRequest) -> Result<Option<Alarm>, ApiError> {
    use pb::alarm_request::AlarmAction;
    let kind = match r.alarm {
        0 => None,
        n => Some(AlarmType::from_wire(n).ok_or_else(|| ApiError::Malformed(format!("unknown alarm type {n}")))?),
    };
    let action = AlarmAction::try_from(r.action)
        .map_err(|_| ApiError::Malformed(format!("unknown alarm action {}", r.action)))?;
    Ok(match (action, kind) {
        (AlarmAction::Get, kind) => Some(Alarm::Get(kind)),
        (_, None) => None,
        (AlarmAction::Activate, Some(alarm)) => Some(Alarm::Activate(AlarmMember { member_id: r.member_id, alarm })),
        (AlarmAction::Deactivate, Some(alarm)) => {
            Some(Alarm::Deactivate(AlarmMember { member_id: r.member_id, alarm }))
        }
    })
}

/// Raising or clearing an alarm needs the root role while auth is on: a `NOSPACE` alarm stops
/// every write in the cluster, so no other user, and no anonymous caller, may raise or clear
/// one. Listing needs no more than a valid token. Deliberately stricter than etcd 3.4, which
/// lets anyone do both.
///
/// # Errors
/// `permission denied`, `user name is empty`.
pub fn check_alarm(auth: &super::auth::Auth, caller: &super::auth::Caller, request: &Alarm) -> Result<(), ApiError> {
    match request {
        // A user, as etcd since the fix for CVE-2026-33413 (v3rpc maintenance.go `Alarm`).
        Alarm::Get(_) => auth.require_user(caller),
        Alarm::Activate(_) | Alarm::Deactivate(_) => auth.check_admin(caller),
    }
}

/// An alarm as etcd's `AlarmMember`.
#[must_use]
pub fn alarm_member(a: &AlarmMember) -> pb::AlarmMember {
    pb::AlarmMember { member_id: a.member_id, alarm: a.alarm.wire() }
}

/// An alarm as `Status` lists it among its errors: gogoproto's text form of `AlarmMember`,
/// trailing space included (`memberID:10276657743932975437 alarm:NOSPACE `), as etcd prints it.
#[must_use]
pub fn status_error(a: &AlarmMember) -> String {
    format!("memberID:{} alarm:{} ", a.member_id, a.alarm.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_convert_as_etcd_reads_them() {
        let get = pb::AlarmRequest { action: 0, member_id: 0, alarm: 0 };
        assert!(matches!(alarm_request(get), Ok(Some(Alarm::Get(None)))));
        let activate_none = pb::AlarmRequest { action: 1, member_id: 5, alarm: 0 };
        assert!(matches!(alarm_request(activate_none), Ok(None)));
        let deactivate = pb::AlarmRequest { action: 2, member_id: 5, alarm: 1 };
        assert!(matches!(
            alarm_request(deactivate),
            Ok(Some(Alarm::Deactivate(AlarmMember { member_id: 5, alarm: AlarmType::NoSpace })))
        ));
        assert!(alarm_request(pb::AlarmRequest { action: 9, member_id: 0, alarm: 0 }).is_err());
        assert!(alarm_request(pb::AlarmRequest { action: 0, member_id: 0, alarm: 7 }).is_err());
        let a = AlarmMember { member_id: 10_276_657_743_932_975_437, alarm: AlarmType::NoSpace };
        assert_eq!(status_error(&a), "memberID:10276657743932975437 alarm:NOSPACE ");
    }
}

//! Writes to key-value, the ledger and the webhook outbox, then traps: none of it may
//! be applied.

use mgpass_plugin_sdk::*;

struct Crash;

fn meta() -> EntryMeta {
    EntryMeta {
        kind: EntryKind::Earn,
        partner: None,
        event_type: Some("crash".into()),
        reference: None,
        note: None,
    }
}

impl Plugin for Crash {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(Crash)
    }

    fn registration(&self) -> Registration {
        Registration {
            partner_events: true,
            ..Registration::default()
        }
    }

    fn on_partner_event(
        &mut self,
        event: PartnerEvent,
        partner: Partner,
    ) -> Result<EventOutcome, String> {
        kv::put("written", "yes")?;
        let entry = ledger::credit(&event.user_id, 100, &meta()).map_err(|e| format!("{e:?}"))?;
        host::emit_webhook(&partner.id, "crash.pending", "{}")?;
        // The call's own reads see its buffered writes...
        assert_eq!(kv::get("written").as_deref(), Some("yes"));
        assert_eq!(ledger::balance(&event.user_id), entry.balance_after);
        // ...and then it dies.
        panic!("crashing after writes");
    }
}

register_plugin!(Crash);

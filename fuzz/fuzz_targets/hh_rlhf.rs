//! Splits arbitrary conversation pairs by the HH-RLHF rules and checks what the split
//! promises: no panic, stripped non-empty parts, and responses that end their conversations.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pyalign::hh_rlhf::{split_record, Prompt, PromptMode};

fuzz_target!(|data: &[u8]| {
    // The first 0xFF byte, which UTF-8 never contains, separates chosen from rejected.
    let (chosen, rejected) = match data.iter().position(|&byte| byte == 0xFF) {
        Some(position) => (&data[..position], &data[position + 1..]),
        None => (data, data),
    };
    let (Ok(chosen), Ok(rejected)) = (std::str::from_utf8(chosen), std::str::from_utf8(rejected))
    else {
        return;
    };

    for mode in [PromptMode::LastTurn, PromptMode::FullContext] {
        let Ok(pair) = split_record(chosen, rejected, mode) else {
            continue;
        };
        assert!(!pair.chosen.is_empty());
        assert_eq!(pair.chosen.trim(), pair.chosen);
        assert!(!pair.rejected.is_empty());
        assert_eq!(pair.rejected.trim(), pair.rejected);
        assert!(chosen.trim_end().ends_with(&pair.chosen));
        assert!(rejected.trim_end().ends_with(&pair.rejected));
        match &pair.prompt {
            Prompt::Text(text) => assert!(!text.is_empty() && chosen.contains(text.as_str())),
            Prompt::Messages(messages) => {
                assert_eq!(messages.last().map(|m| m.role.as_str()), Some("user"));
                // The JSON text of the messages must parse back.
                let text = pair.prompt.to_text();
                assert!(pyalign::chat::parse_conversation(&text).is_some());
            }
        }
    }
});

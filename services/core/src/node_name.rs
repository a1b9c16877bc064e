//! The one rule for node names, which every party checks: the agent-node
//! for its own `--name`, the market when a node registers, the trainer for
//! the node a rollout comes from (it takes one rollout per node and version).

use crate::error::CoreError;

/// Longest node name, characters.
pub const MAX_NODE_NAME_CHARS: usize = 64;

/// Checks a node name: 1..=64 characters, none of them a control character.
/// The error names `field` (each caller's name for the setting).
pub fn check_node_name(name: &str, field: &str) -> Result<(), CoreError> {
    let chars = name.chars().count();
    if !(1..=MAX_NODE_NAME_CHARS).contains(&chars) || name.chars().any(char::is_control) {
        return Err(CoreError::invalid(
            field,
            format!(
                "must be 1..={MAX_NODE_NAME_CHARS} printable characters, got {chars} characters"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_to_sixty_four_printable_characters() {
        for ok in ["a", "node-7", "ürün", &"x".repeat(64)] {
            assert!(check_node_name(ok, "name").is_ok(), "{ok}");
        }
        for bad in ["", "tab\there", "new\nline", &"x".repeat(65)] {
            let e = check_node_name(bad, "node_name").unwrap_err().to_string();
            assert!(e.contains("node_name") && e.contains("1..=64 printable"), "{bad:?}: {e}");
        }
    }
}

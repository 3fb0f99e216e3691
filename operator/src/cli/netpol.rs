//! `diff --networkpolicy`: the observed calls NetworkPolicy would block, as text.

use std::collections::BTreeMap;

use crate::policy::calls::ObservedCall;
use crate::policy::evaluate::Verdict;

/// What `diff --networkpolicy` prints: per client, each observed call the policies would
/// block and which side blocks it, then a count.
pub fn format_verdicts(judged: &[(ObservedCall, Verdict)]) -> String {
    let mut blocked: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (call, verdict) in judged {
        let Verdict::Blocked { egress, ingress } = verdict else {
            continue;
        };
        let protocol = call.connection.protocol.as_str();
        let mut by = Vec::new();
        if !egress.is_empty() {
            by.push(format!("egress: {}", egress.join(", ")));
        }
        if !ingress.is_empty() {
            by.push(format!("ingress: {}", ingress.join(", ")));
        }
        let line = format!(
            "  - {} on {}/{protocol} ({})",
            call.target,
            call.connection.port,
            by.join("; ")
        );
        let key = (call.client.namespace.clone(), call.client.name.clone());
        let lines = blocked.entry(key).or_default();
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    let mut out = String::new();
    let mut count = 0;
    for ((namespace, name), lines) in &blocked {
        out.push_str(&format!(
            "{name} in namespace {namespace}: observed calls NetworkPolicy would block:\n"
        ));
        for line in lines {
            out.push_str(line);
            out.push('\n');
            count += 1;
        }
    }
    if count == 0 {
        out.push_str(&format!(
            "NetworkPolicy lets every one of {} observed call(s) through.\n",
            judged.len()
        ));
    } else {
        out.push_str(&format!(
            "{count} of {} observed call(s) would be blocked by NetworkPolicy.\n",
            judged.len()
        ));
    }
    out
}

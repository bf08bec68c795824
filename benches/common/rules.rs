//! 1,000 rules in the style of the playbook, for the benches that load
//! rules (`load`, `lsp`); they check clean against the example `nudge.yaml`.

const TAGS: &[&str] = &[
    "mom", "dad", "student", "football", "coffee", "tea", "gamer", "runner", "yoga", "pets",
];
const TIERS: &[&str] = &["bronze", "silver", "gold", "diamond"];

/// One rule in the style of the playbook, varied by `i`.
pub fn rule(i: usize) -> String {
    let tag = TAGS[i % TAGS.len()];
    let tier = TIERS[i % TIERS.len()];
    let n = (i * 37) % 300 + 10;
    match i % 5 {
        0 => format!(
            "rule \"winback {i}\"\n  on tick\n  when days_since_last_purchase > cycle * {}.5 and tier >= {tier}\n  then send coupon 30-6 via sms, tag \"winback\"\n  limit once per 30d\n  holdout 10%\n",
            i % 3 + 1
        ),
        1 => format!(
            "rule \"points {i}\"\n  on purchase\n  when event.amount > {n} and \"{tag}\" not in tags\n  then award points floor(event.amount * 2)\n  priority {}\n",
            i % 7
        ),
        2 => format!(
            "rule \"upgrade {i}\"\n  on purchase\n  when sum(purchase.amount, 365d) > {n}0 and tier < diamond\n  then set tier gold, send coupon upgrade_gift\n  group \"tiers\"\n"
        ),
        3 => format!(
            "rule \"club {i}\"\n  on purchase\n  when count(purchase where event.category == \"c{}\", 60d) >= 3 and (city == \"Berlin\" or city in [\"Paris\", \"Rome\"])\n  then tag \"{tag}\"\n",
            i % 20
        ),
        _ => format!(
            "when points >= {n}00 and days_since_last_purchase between 30 and {n} and tier in [{tier}, diamond] then send message \"reminder\" via wechat\n"
        ),
    }
}

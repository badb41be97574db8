//! The balancer-manager page, laid out like Apache's.

use std::fmt::Write as _;

use super::BalancerView;

/// Escapes text for HTML.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1}G", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1}M", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1}K", n as f64 / 1024.0),
        n => n.to_string(),
    }
}

/// A JSON value as page text: strings without quotes, null as `-`.
fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// The whole page.
pub(crate) fn page(
    balancers: &[BalancerView],
    sections: &[(String, String, serde_json::Value)],
    nonce: &str,
    msg: Option<&str>,
) -> String {
    let mut h = String::with_capacity(4096);
    h.push_str(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Balancer Manager</title>\n\
         <style>body{font-family:sans-serif}table{border-collapse:collapse;margin-bottom:1em}\
         th,td{border:1px solid #999;padding:3px 6px;text-align:left}th{background:#ddd}\
         .msg{background:#ffd;padding:4px}input[type=text]{width:6em}</style></head><body>\n\
         <h1>Load Balancer Manager</h1>\n",
    );
    if let Some(m) = msg {
        let _ = writeln!(h, "<p class=\"msg\" id=\"msg\">{}</p>", esc(m));
    }
    for (key, title, value) in sections {
        let _ = writeln!(
            h,
            "<h2>{}</h2>\n<table id=\"section-{}\">",
            esc(title),
            esc(key)
        );
        match value {
            serde_json::Value::Object(fields) => {
                for (name, v) in fields {
                    let _ = writeln!(
                        h,
                        "<tr><th>{}</th><td>{}</td></tr>",
                        esc(name),
                        esc(&plain(v))
                    );
                }
            }
            v => {
                let _ = writeln!(h, "<tr><td>{}</td></tr>", esc(&plain(v)));
            }
        }
        h.push_str("</table>\n");
    }
    let nonce = esc(nonce);
    for b in balancers {
        let name = esc(&b.name);
        let _ = writeln!(
            h,
            "<h2>LoadBalancer Status for <a id=\"balancer-{name}\">balancer://{name}</a> [lbmethod: {}]</h2>",
            esc(&b.lbmethod)
        );
        h.push_str(
            "<table><tr><th>Worker URL</th><th>Route</th><th>Factor</th><th>Set</th><th>Status</th>\
             <th>Elected</th><th>Busy</th><th>To</th><th>From</th><th>Health</th><th>Change</th></tr>\n",
        );
        for m in &b.members {
            let id = m.id;
            let check = |on: bool| if on { " checked" } else { "" };
            let _ = writeln!(
                h,
                "<tr id=\"member-{name}-{id}\" data-url=\"{url}\"><td>{url}</td><td>{route}</td><td>{lf}</td><td>{ls}</td>\
                 <td class=\"status\">{status}</td><td class=\"elected\">{el}</td><td>{busy}</td><td>{to}</td><td>{from}</td><td>{health}</td>\
                 <td><form method=\"post\" action=\"\" id=\"form-{name}-{id}\">\
                 <input type=\"hidden\" name=\"nonce\" value=\"{nonce}\"><input type=\"hidden\" name=\"b\" value=\"{name}\">\
                 <input type=\"hidden\" name=\"w\" value=\"{id}\"><input type=\"hidden\" name=\"flags\" value=\"1\">\
                 Factor <input type=\"text\" name=\"lf\" value=\"{lf}\"> Set <input type=\"text\" name=\"ls\" value=\"{ls}\"> \
                 Route <input type=\"text\" name=\"wr\" value=\"{route}\"> \
                 <label><input type=\"checkbox\" name=\"D\"{d}>D</label> <label><input type=\"checkbox\" name=\"N\"{n}>N</label> \
                 <label><input type=\"checkbox\" name=\"H\"{hs}>H</label> <label><input type=\"checkbox\" name=\"I\"{i}>I</label> \
                 <label><input type=\"checkbox\" name=\"S\"{s}>S</label> \
                 <input type=\"submit\" value=\"Update\"></form></td></tr>",
                url = esc(&m.url),
                route = esc(&m.route),
                lf = m.loadfactor,
                ls = m.lbset,
                status = esc(&m.status),
                el = m.elected,
                busy = m.busy,
                to = bytes(m.bytes_to),
                from = bytes(m.bytes_from),
                health = esc(&m.health),
                d = check(m.flags.disabled),
                n = check(m.flags.drain),
                hs = check(m.flags.hot_standby),
                i = check(m.flags.ignore_errors),
                s = check(m.flags.stopped),
            );
        }
        h.push_str("</table>\n");
        let _ = writeln!(
            h,
            "<form method=\"post\" action=\"\" id=\"add-{name}\"><input type=\"hidden\" name=\"nonce\" value=\"{nonce}\">\
             <input type=\"hidden\" name=\"b\" value=\"{name}\">Add member: <input type=\"text\" name=\"add\" style=\"width:28em\" \
             placeholder=\"http://127.0.0.1:9003,route=r3,loadfactor=1\"> <input type=\"submit\" value=\"Add\"></form>"
        );
    }
    h.push_str(
        "<p>Status: Ok ready, Dis disabled (D), Drn draining (N), Stby hot standby (H), Ign ignoring errors (I), \
         Stop stopped (S), Err in error (retry pending), HcFl health check failed, \
         Lf0 loadfactor 0 (sticky sessions only).</p>\n\
         <p><a href=\"api\">JSON</a> | <a href=\"metrics\">metrics</a></p></body></html>\n",
    );
    h
}

//! Per-tenant client gauges with a bounded label set: the busiest tenants get series of
//! their own, everyone else is summed under `tenant="other"`, so a proxy with thousands of
//! tenants exports a few dozen series. Rendered from the clients' state at scrape time;
//! nothing is counted on the relay's path.

use super::names;
use std::fmt::Write as _;

/// Tenants with series of their own in [`names::TENANT_CLIENTS`].
pub const TENANT_SERIES: usize = 10;

/// One tenant's logged-in clients: the tenant (`None`: tenant-less logins), then how many
/// hold a server connection, wait for one, and are idle.
pub type TenantClients = (Option<String>, [u64; 3]);

const STATES: [&str; 3] = ["active", "waiting", "idle"];

/// Appends the gauges for `busiest_first` (as `proxy::client_info::tenant_load` orders
/// them): one series per state for each of the first [`TENANT_SERIES`] tenants, the rest
/// under `other`, tenant-less logins under `none`, and the number of tenants connected.
pub fn render_tenant_clients(busiest_first: &[TenantClients], out: &mut String) {
    let name = names::TENANT_CLIENTS;
    let _ = writeln!(
        out,
        "# HELP {name} Logged-in clients of the busiest tenants by state (the rest under tenant=\"other\")."
    );
    let _ = writeln!(out, "# TYPE {name} gauge");
    let mut other = [0u64; 3];
    let mut shown = 0;
    for (tenant, counts) in busiest_first {
        let label = match tenant {
            None => "none",
            Some(_) if shown >= TENANT_SERIES => {
                other.iter_mut().zip(counts).for_each(|(o, c)| *o += c);
                continue;
            }
            Some(t) => {
                shown += 1;
                t.as_str()
            }
        };
        for (state, n) in STATES.iter().zip(counts) {
            let _ = writeln!(out, "{name}{{tenant=\"{label}\",state=\"{state}\"}} {n}");
        }
    }
    for (state, n) in STATES.iter().zip(other) {
        let _ = writeln!(out, "{name}{{tenant=\"other\",state=\"{state}\"}} {n}");
    }
    let connected = names::TENANTS_CONNECTED;
    let tenants = busiest_first.iter().filter(|(t, _)| t.is_some()).count();
    let _ = writeln!(
        out,
        "# HELP {connected} Tenants with at least one logged-in client."
    );
    let _ = writeln!(out, "# TYPE {connected} gauge");
    let _ = writeln!(out, "{connected} {tenants}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_tenants_get_series_and_the_rest_are_summed() {
        let mut loads: Vec<TenantClients> = (0..15u64)
            .map(|i| (Some(format!("T{i:02}")), [15 - i, 1, 2]))
            .collect();
        loads.insert(3, (None, [4, 0, 1]));
        let mut out = String::new();
        render_tenant_clients(&loads, &mut out);
        let name = names::TENANT_CLIENTS;
        assert!(out.contains(&format!("{name}{{tenant=\"T00\",state=\"active\"}} 15\n")));
        assert!(out.contains(&format!("{name}{{tenant=\"T09\",state=\"idle\"}} 2\n")));
        assert!(
            !out.contains("T10"),
            "an 11th tenant got series of its own:\n{out}"
        );
        // T10..T14: active 5+4+3+2+1, waiting 5, idle 10.
        assert!(out.contains(&format!("{name}{{tenant=\"other\",state=\"active\"}} 15\n")));
        assert!(out.contains(&format!("{name}{{tenant=\"other\",state=\"waiting\"}} 5\n")));
        assert!(out.contains(&format!("{name}{{tenant=\"none\",state=\"active\"}} 4\n")));
        assert!(out.contains(&format!("{} 15\n", names::TENANTS_CONNECTED)));
        let series = out.lines().filter(|l| l.starts_with(name)).count();
        assert_eq!(series, (TENANT_SERIES + 2) * 3, "bounded:\n{out}");
    }
}

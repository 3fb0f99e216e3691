//! Command-line flags of `trafficmap-operator` (each also an environment variable).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};

use crate::resolve::IpCidr;

/// The trafficmap operator: resolves sniffer reports to workloads, keeps one ObservedTraffic
/// per client workload and emits draft Otterize ClientIntents.
#[derive(Debug, Parser)]
#[command(version, about = "The trafficmap operator: resolves sniffer reports to workloads, keeps one ObservedTraffic per client workload and emits draft Otterize ClientIntents.", long_about = None, after_help = "\
Examples:
  trafficmap-operator --namespace trafficmap --leader-elect
  trafficmap-operator --emit-client-intents --flush-interval 10s
  trafficmap-operator --exclude-namespace kube-system --exclude-namespace trafficmap
  trafficmap-operator --tls-cert-file /tls/tls.crt --tls-key-file /tls/tls.key")]
pub struct Args {
    /// Address of the HTTPS endpoint sniffers post reports to.
    #[arg(long, env = "TRAFFICMAP_INGEST_ADDR", default_value = "0.0.0.0:8443")]
    pub ingest_addr: SocketAddr,
    /// Address of /healthz, /readyz and /metrics (plain HTTP).
    #[arg(long, env = "TRAFFICMAP_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,
    /// The operator's namespace (downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "trafficmap")]
    pub namespace: String,
    /// This replica's name, its leader-election identity (downward API).
    #[arg(long, env = "POD_NAME", default_value = "trafficmap-operator")]
    pub pod_name: String,
    /// ServiceAccount whose tokens may post reports, as `namespace/name` or `name` (in
    /// --namespace).
    #[arg(
        long,
        env = "TRAFFICMAP_SNIFFER_SERVICE_ACCOUNT",
        default_value = "trafficmap-sniffer"
    )]
    pub sniffer_service_account: String,
    /// Audience report tokens must be issued for.
    #[arg(long, env = "TRAFFICMAP_TOKEN_AUDIENCE", default_value = "trafficmap")]
    pub token_audience: String,
    /// Largest report body accepted, in bytes (larger: 413).
    #[arg(long, env = "TRAFFICMAP_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Most DNS answers (client, address, name) remembered to name connections; past this the
    /// oldest are forgotten and counted (`dns_answers_evicted_total`).
    #[arg(long, env = "TRAFFICMAP_MAX_DNS_ANSWERS", default_value_t = crate::resolve::dns_names::DEFAULT_MAX_DNS_ANSWERS)]
    pub max_dns_answers: usize,
    /// How long an authenticated client has to send the whole report body (slower: 408).
    #[arg(long, env = "TRAFFICMAP_BODY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,
    /// Longest a report request waits for its changes to be written to the API server; past
    /// it the answer is 503 and the sniffer sends the report again. Keep it under the
    /// sniffer's `--request-timeout`.
    #[arg(long, env = "TRAFFICMAP_ACK_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub ack_timeout: Duration,
    /// Cluster DNS domain.
    #[arg(
        long,
        env = "TRAFFICMAP_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,
    /// Pod IP range (repeatable; nodes' spec.podCIDRs are added automatically).
    #[arg(long = "pod-cidr", env = "TRAFFICMAP_POD_CIDRS", value_delimiter = ',')]
    pub pod_cidrs: Vec<IpCidr>,
    /// Service ClusterIP range (repeatable).
    #[arg(
        long = "service-cidr",
        env = "TRAFFICMAP_SERVICE_CIDRS",
        value_delimiter = ',',
        default_value = "10.96.0.0/12"
    )]
    pub service_cidrs: Vec<IpCidr>,
    /// The cluster DNS Service as `namespace/name`; calls to it are not targets.
    #[arg(
        long,
        env = "TRAFFICMAP_CLUSTER_DNS_SERVICE",
        default_value = "kube-system/kube-dns"
    )]
    pub cluster_dns_service: String,
    /// A namespace whose workloads are not mapped as clients: no ObservedTraffic and no draft
    /// ClientIntents for them; calls to them are still targets (repeatable).
    #[arg(
        long = "exclude-namespace",
        env = "TRAFFICMAP_EXCLUDE_NAMESPACES",
        value_delimiter = ','
    )]
    pub exclude_namespaces: Vec<String>,
    /// How often the operator works out which observed calls the cluster's ClientIntents and
    /// NetworkPolicies would block (metric `calls_would_be_blocked`, ObservedTraffic condition
    /// `WouldBeBlocked`); 0 turns the audit off.
    #[arg(long, env = "TRAFFICMAP_AUDIT_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub audit_interval: Duration,
    /// How often changed ObservedTraffic statuses are written (at most once per object).
    #[arg(long, env = "TRAFFICMAP_FLUSH_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub flush_interval: Duration,
    /// Most clients whose ObservedTraffic (and draft) are written at once; each write is one to
    /// three API requests in a row, so this bounds the requests in flight.
    #[arg(long, env = "TRAFFICMAP_WRITE_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub write_concurrency: u16,
    /// Write a draft ClientIntents per client workload into its namespace. Off by default: an
    /// intents-operator that enforces (active mode, a ProtectedService, an enforced namespace)
    /// would enforce unreviewed drafts and block every client not observed yet. Export the
    /// drafts with `kubectl trafficmap export`, review them, and apply them yourself.
    #[arg(long, env = "TRAFFICMAP_EMIT_CLIENT_INTENTS", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", overrides_with = "emit_client_intents")]
    pub emit_client_intents: bool,
    /// Elect a leader through a Lease (run with 2 replicas); off: this replica leads.
    #[arg(long, env = "TRAFFICMAP_LEADER_ELECT", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub leader_elect: bool,
    /// Name of the leader-election Lease in --namespace.
    #[arg(
        long,
        env = "TRAFFICMAP_LEASE_NAME",
        default_value = "trafficmap-operator"
    )]
    pub lease_name: String,
    /// Secret (in --namespace) where the generated serving certificate and CA are kept.
    #[arg(
        long,
        env = "TRAFFICMAP_TLS_SECRET",
        default_value = "trafficmap-operator-tls"
    )]
    pub tls_secret: String,
    /// ConfigMap (in --namespace) where the CA is published for sniffers (key `ca.crt`).
    #[arg(long, env = "TRAFFICMAP_CA_CONFIGMAP", default_value = "trafficmap-ca")]
    pub ca_configmap: String,
    /// ConfigMap (in --namespace) where a stopping operator leaves its history of addresses for
    /// the next one (key `handover.json`), so that calls seen just before a restart are still
    /// attributed; empty: none.
    #[arg(
        long,
        env = "TRAFFICMAP_HANDOVER_CONFIGMAP",
        default_value = "trafficmap-handover"
    )]
    pub handover_configmap: String,
    /// The operator Service's name, for the generated certificate's DNS names.
    #[arg(
        long,
        env = "TRAFFICMAP_SERVICE_NAME",
        default_value = "trafficmap-operator"
    )]
    pub service_name: String,
    /// Extra names (or IPs) for the generated certificate (repeatable).
    #[arg(long = "tls-san", env = "TRAFFICMAP_TLS_SANS", value_delimiter = ',')]
    pub tls_sans: Vec<String>,
    /// A certificate of your own instead of the generated one (with --tls-key-file).
    #[arg(long, env = "TRAFFICMAP_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// The key of --tls-cert-file.
    #[arg(long, env = "TRAFFICMAP_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "TRAFFICMAP_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

impl Args {
    /// The sniffer account's `(namespace, name)`.
    pub fn sniffer_account(&self) -> (String, String) {
        match self.sniffer_service_account.split_once('/') {
            Some((ns, name)) => (ns.to_string(), name.to_string()),
            None => (self.namespace.clone(), self.sniffer_service_account.clone()),
        }
    }

    /// Names the generated certificate is valid for.
    pub fn certificate_names(&self) -> Vec<String> {
        let (svc, ns, domain) = (&self.service_name, &self.namespace, &self.cluster_domain);
        let mut names = vec![
            svc.clone(),
            format!("{svc}.{ns}"),
            format!("{svc}.{ns}.svc"),
            format!("{svc}.{ns}.svc.{domain}"),
        ];
        names.extend(self.tls_sans.iter().cloned());
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_name_the_service() {
        let args = Args::parse_from(["trafficmap-operator"]);
        assert_eq!(args.flush_interval, Duration::from_secs(5));
        assert!(
            !args.emit_client_intents,
            "drafts in the cluster are opt-in"
        );
        assert!(!args.leader_elect);
        assert_eq!(args.write_concurrency, 16);
        assert_eq!(
            args.sniffer_account(),
            ("trafficmap".into(), "trafficmap-sniffer".into())
        );
        assert!(
            args.certificate_names()
                .contains(&"trafficmap-operator.trafficmap.svc".to_string())
        );
    }

    #[test]
    fn writes_need_at_least_one_at_a_time() {
        assert!(Args::try_parse_from(["trafficmap-operator", "--write-concurrency", "0"]).is_err());
        let args = Args::parse_from(["trafficmap-operator", "--write-concurrency", "1"]);
        assert_eq!(args.write_concurrency, 1);
    }

    #[test]
    fn emission_can_be_turned_on_and_leader_election_on() {
        let args = Args::parse_from([
            "trafficmap-operator",
            "--emit-client-intents",
            "--leader-elect",
            "--sniffer-service-account",
            "nodes/agent",
        ]);
        assert!(args.emit_client_intents);
        let last_wins = Args::parse_from([
            "trafficmap-operator",
            "--emit-client-intents=true",
            "--emit-client-intents=false",
        ]);
        assert!(!last_wins.emit_client_intents);
        assert!(args.leader_elect);
        assert_eq!(args.sniffer_account(), ("nodes".into(), "agent".into()));
    }

    #[test]
    fn excluded_namespaces_repeat_or_come_comma_separated() {
        let args = Args::parse_from(["trafficmap-operator"]);
        assert!(args.exclude_namespaces.is_empty());
        let args = Args::parse_from([
            "trafficmap-operator",
            "--exclude-namespace",
            "kube-system,trafficmap",
            "--exclude-namespace",
            "monitoring",
        ]);
        assert_eq!(
            args.exclude_namespaces,
            ["kube-system", "trafficmap", "monitoring"]
        );
    }
}

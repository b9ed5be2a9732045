//! The certificates and keys a private control plane needs, written into its work folder:
//! one CA that signs the apiserver's serving cert and the admin's client cert (and that the
//! controller-manager uses to sign CSRs), plus the service-account token signing key.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::{Error, Result};

/// Paths of the generated files, plus the PEM text the kubeconfig embeds.
#[derive(Debug)]
pub(crate) struct Pki {
    pub(crate) ca_cert: PathBuf,
    pub(crate) ca_key: PathBuf,
    pub(crate) serving_cert: PathBuf,
    pub(crate) serving_key: PathBuf,
    pub(crate) service_account_key: PathBuf,
    pub(crate) service_account_pub: PathBuf,
    pub(crate) ca_pem: String,
    pub(crate) admin_cert_pem: String,
    pub(crate) admin_key_pem: String,
    /// The admin's client cert and key as files (the apiserver's client to kubelets).
    pub(crate) admin_cert: PathBuf,
    pub(crate) admin_key: PathBuf,
    /// With a node: the kubelet's client cert (`system:node:<name>` in `system:nodes`).
    pub(crate) node_cert_pem: Option<String>,
    pub(crate) node_key_pem: Option<String>,
}

/// Where a control plane is reached besides loopback, and the node it has, if any.
#[derive(Debug, Default)]
pub(crate) struct PkiFor {
    /// More addresses the apiserver's serving cert names (the node IP, the `kubernetes`
    /// Service IP).
    pub(crate) ips: Vec<std::net::Ipv4Addr>,
    /// The node's name, for its kubelet's client cert.
    pub(crate) node: Option<String>,
}

/// The user the admin client cert authenticates as; `system:masters` is bound to cluster-admin.
pub(crate) const ADMIN_USER: &str = "nsh-testenv-admin";
const ADMIN_GROUP: &str = "system:masters";

impl Pki {
    pub(crate) fn generate(dir: &Path, extra: &PkiFor) -> Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "nsh-testenv-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(ca_params, ca_key);

        // Names a client may use for the apiserver: loopback, and the in-cluster service IP/names.
        let serving_key = KeyPair::generate()?;
        let mut serving = CertificateParams::new(vec![
            "localhost".to_owned(),
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
        ])?;
        serving
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        serving
            .subject_alt_names
            .push(SanType::IpAddress([10, 0, 0, 1].into()));
        serving.subject_alt_names.push(SanType::DnsName(
            "kubernetes.default.svc.cluster.local".try_into()?,
        ));
        for ip in &extra.ips {
            serving
                .subject_alt_names
                .push(SanType::IpAddress((*ip).into()));
        }
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &issuer)?;

        let admin_key = KeyPair::generate()?;
        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin
            .distinguished_name
            .push(DnType::CommonName, ADMIN_USER);
        admin
            .distinguished_name
            .push(DnType::OrganizationName, ADMIN_GROUP);
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &issuer)?;

        let service_account = KeyPair::generate()?;

        let node = match &extra.node {
            None => None,
            Some(name) => {
                let key = KeyPair::generate()?;
                let mut params = CertificateParams::new(Vec::<String>::new())?;
                params
                    .distinguished_name
                    .push(DnType::CommonName, format!("system:node:{name}"));
                params
                    .distinguished_name
                    .push(DnType::OrganizationName, "system:nodes");
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                let cert = params.signed_by(&key, &issuer)?;
                Some((cert.pem(), key.serialize_pem()))
            }
        };

        let write = |name: &str, contents: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, contents)
                .map_err(Error::io(format!("write {}", path.display())))?;
            Ok(path)
        };
        Ok(Self {
            ca_cert: write("ca.crt", &ca_cert.pem())?,
            ca_key: write("ca.key", &ca_key_pem)?,
            serving_cert: write("apiserver.crt", &serving_cert.pem())?,
            serving_key: write("apiserver.key", &serving_key.serialize_pem())?,
            service_account_key: write("sa.key", &service_account.serialize_pem())?,
            service_account_pub: write("sa.pub", &service_account.public_key_pem())?,
            ca_pem: ca_cert.pem(),
            admin_cert: write("admin.crt", &admin_cert.pem())?,
            admin_key: write("admin.key", &admin_key.serialize_pem())?,
            admin_cert_pem: admin_cert.pem(),
            admin_key_pem: admin_key.serialize_pem(),
            node_cert_pem: node.as_ref().map(|n| n.0.clone()),
            node_key_pem: node.map(|n| n.1),
        })
    }
}

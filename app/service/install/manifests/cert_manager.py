"""The cert-manager Issuers and Certificates of the serving Secret: its own step."""

from __future__ import annotations

from app.service.install.manifests.common import CERT_MANAGER_FILE, NAME, TLS_SECRET, WEBHOOKS_FILE, Document, InstallOptions, meta


def cert_manager(o: InstallOptions) -> list[Document]:
    ns = o.namespace
    serving = f"{NAME}-serving"
    issuer_ref = {"kind": "Issuer", "group": "cert-manager.io"}
    return [
        Document(
            CERT_MANAGER_FILE,
            "Serving certificates from cert-manager (https://cert-manager.io), instead of `skill-webhook certs`.\n"
            "Apply after the namespace and before the Deployment has to start; then register the webhooks\n"
            "with the CA cert-manager made, and let its CA injector keep caBundle current:\n"
            "\n"
            f"  kubectl -n {ns} wait certificate/{serving} --for=condition=Ready\n"
            f"  kubectl -n {ns} get secret {TLS_SECRET} -o jsonpath='{{.data.ca\\.crt}}' | base64 -d > ca.crt\n"
            f"  skill-webhook ca-bundle --ca ca.crt {WEBHOOKS_FILE} | kubectl apply -f -\n"
            f"  kubectl annotate --overwrite mutatingwebhookconfiguration/{NAME} \\\n"
            f"      validatingwebhookconfiguration/{NAME} cert-manager.io/inject-ca-from={ns}/{serving}\n"
            "\n"
            "cert-manager renews the serving certificate into the Secret before it expires; the kubelet\n"
            "updates the mounted files and the webhook reloads them without a restart. The chain is\n"
            "self-signed Issuer -> CA Certificate -> CA Issuer -> serving Certificate, so the CA (and so\n"
            "the caBundle) stays the same across serving renewals.",
            {
                "apiVersion": "cert-manager.io/v1",
                "kind": "Issuer",
                "metadata": meta(f"{NAME}-selfsigned", ns),
                "spec": {"selfSigned": {}},
            },
        ),
        Document(
            CERT_MANAGER_FILE,
            "The CA: 10 years, renewed 30 days before it ends.",
            {
                "apiVersion": "cert-manager.io/v1",
                "kind": "Certificate",
                "metadata": meta(f"{NAME}-ca", ns),
                "spec": {
                    "isCA": True,
                    "commonName": f"{NAME}-ca",
                    "secretName": f"{NAME}-ca",
                    "duration": "87600h",
                    "renewBefore": "720h",
                    "privateKey": {"algorithm": "ECDSA", "size": 256},
                    "issuerRef": {**issuer_ref, "name": f"{NAME}-selfsigned"},
                },
            },
        ),
        Document(
            CERT_MANAGER_FILE,
            "",
            {
                "apiVersion": "cert-manager.io/v1",
                "kind": "Issuer",
                "metadata": meta(f"{NAME}-ca", ns),
                "spec": {"ca": {"secretName": f"{NAME}-ca"}},
            },
        ),
        Document(
            CERT_MANAGER_FILE,
            f"The serving certificate for the Service name: 90 days, renewed 15 days before, into {TLS_SECRET}.",
            {
                "apiVersion": "cert-manager.io/v1",
                "kind": "Certificate",
                "metadata": meta(serving, ns),
                "spec": {
                    "secretName": TLS_SECRET,
                    "commonName": f"{NAME}.{ns}.svc",
                    "dnsNames": [f"{NAME}.{ns}.svc", f"{NAME}.{ns}.svc.cluster.local"],
                    "duration": "2160h",
                    "renewBefore": "360h",
                    "usages": ["server auth", "digital signature"],
                    "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                    "issuerRef": {**issuer_ref, "name": f"{NAME}-ca"},
                },
            },
        ),
    ]



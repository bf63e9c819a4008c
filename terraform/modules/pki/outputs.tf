output "ingress_server" {
  description = "Secret data of the ingress's server credential (tls.crt = leaf + intermediate, tls.key, ca.crt = the chain that verifies the egress's client certificate)."
  sensitive   = true
  value = {
    "tls.crt" = "${tls_locally_signed_cert.leaf["server"].cert_pem}${tls_locally_signed_cert.intermediate.cert_pem}"
    "tls.key" = tls_private_key.leaf["server"].private_key_pem
    "ca.crt"  = local.ca_chain
  }
}

output "egress_client" {
  description = "Secret data of the egress's client credential for the cross-cluster hop (ca.crt verifies the ingress's server certificate)."
  sensitive   = true
  value = {
    "tls.crt" = "${tls_locally_signed_cert.leaf["client"].cert_pem}${tls_locally_signed_cert.intermediate.cert_pem}"
    "tls.key" = tls_private_key.leaf["client"].private_key_pem
    "ca.crt"  = local.ca_chain
  }
}

output "egress_mesh" {
  description = "Secret data of the egress's mesh workload credential for port 15443 (SPIFFE URI SAN; ca.crt is the mesh CA that verifies sidecars)."
  sensitive   = true
  value = {
    "tls.crt" = tls_locally_signed_cert.mesh_egress.cert_pem
    "tls.key" = tls_private_key.mesh_egress.private_key_pem
    "ca.crt"  = tls_self_signed_cert.mesh_ca.cert_pem
  }
}

output "ca_chain_pem" {
  description = "ca-chain.cert.pem of the tutorial (intermediate, then root): what a client outside the pair trusts."
  value       = local.ca_chain
}

output "mesh_ca_pem" {
  description = "The mesh CA certificate: the root sidecars (or istiod's plug-in CA) must trust to call the egress on 15443."
  value       = tls_self_signed_cert.mesh_ca.cert_pem
}

output "intermediate_ca" {
  description = "The intermediate CA's certificate and key, as kubernetes.io/tls Secret data, for cert-manager's CA Issuer (deploy/kubernetes/cert-manager)."
  sensitive   = true
  value = {
    "tls.crt" = tls_locally_signed_cert.intermediate.cert_pem
    "tls.key" = tls_private_key.intermediate.private_key_pem
  }
}

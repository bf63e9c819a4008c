# The tutorial's create-keys.sh as code: root CA -> intermediate CA -> server certificate
# for $SERVICE_URL and client certificate; plus a mesh CA with the egress gateway's SPIFFE
# workload certificate (the 15443 listener). The same layout as `strait-ingress certs`.

locals {
  leaves = {
    server = { cn = var.service_url, dns = [var.service_url], uris = [], uses = ["digital_signature", "server_auth"] }
    client = { cn = "client.${var.service_url}", dns = ["client.${var.service_url}"], uris = [], uses = ["digital_signature", "client_auth"] }
  }
  egress_spiffe_id = "spiffe://${var.trust_domain}/ns/${var.egress_namespace}/sa/strait-egress-gateway"
}

resource "tls_private_key" "root" {
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_self_signed_cert" "root" {
  private_key_pem       = tls_private_key.root.private_key_pem
  is_ca_certificate     = true
  validity_period_hours = var.ca_validity_hours
  allowed_uses          = ["cert_signing", "crl_signing"]
  subject {
    common_name  = "Strait Root CA"
    organization = var.organization
  }
}

resource "tls_private_key" "intermediate" {
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "intermediate" {
  private_key_pem = tls_private_key.intermediate.private_key_pem
  subject {
    common_name  = "Strait Intermediate CA"
    organization = var.organization
  }
}

resource "tls_locally_signed_cert" "intermediate" {
  cert_request_pem      = tls_cert_request.intermediate.cert_request_pem
  ca_private_key_pem    = tls_private_key.root.private_key_pem
  ca_cert_pem           = tls_self_signed_cert.root.cert_pem
  is_ca_certificate     = true
  validity_period_hours = var.ca_validity_hours
  allowed_uses          = ["cert_signing", "crl_signing"]
}

resource "tls_private_key" "leaf" {
  for_each    = local.leaves
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "leaf" {
  for_each        = local.leaves
  private_key_pem = tls_private_key.leaf[each.key].private_key_pem
  dns_names       = each.value.dns
  uris            = each.value.uris
  subject {
    common_name  = each.value.cn
    organization = var.organization
  }
}

resource "tls_locally_signed_cert" "leaf" {
  for_each              = local.leaves
  cert_request_pem      = tls_cert_request.leaf[each.key].cert_request_pem
  ca_private_key_pem    = tls_private_key.intermediate.private_key_pem
  ca_cert_pem           = tls_locally_signed_cert.intermediate.cert_pem
  validity_period_hours = var.leaf_validity_hours
  early_renewal_hours   = floor(var.leaf_validity_hours / 3)
  allowed_uses          = concat(each.value.uses, ["key_encipherment"])
}

resource "tls_private_key" "mesh_ca" {
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_self_signed_cert" "mesh_ca" {
  private_key_pem       = tls_private_key.mesh_ca.private_key_pem
  is_ca_certificate     = true
  validity_period_hours = var.ca_validity_hours
  allowed_uses          = ["cert_signing", "crl_signing"]
  subject {
    common_name  = "${var.trust_domain} mesh CA"
    organization = var.organization
  }
}

resource "tls_private_key" "mesh_egress" {
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "mesh_egress" {
  private_key_pem = tls_private_key.mesh_egress.private_key_pem
  dns_names       = [var.service_url]
  uris            = [local.egress_spiffe_id]
  subject {
    common_name  = "strait-egress-gateway"
    organization = var.organization
  }
}

resource "tls_locally_signed_cert" "mesh_egress" {
  cert_request_pem      = tls_cert_request.mesh_egress.cert_request_pem
  ca_private_key_pem    = tls_private_key.mesh_ca.private_key_pem
  ca_cert_pem           = tls_self_signed_cert.mesh_ca.cert_pem
  validity_period_hours = var.leaf_validity_hours
  early_renewal_hours   = floor(var.leaf_validity_hours / 3)
  allowed_uses          = ["digital_signature", "key_encipherment", "server_auth", "client_auth"]
}

locals {
  # ca-chain.cert.pem of the tutorial: intermediate then root.
  ca_chain = "${tls_locally_signed_cert.intermediate.cert_pem}${tls_self_signed_cert.root.cert_pem}"
}

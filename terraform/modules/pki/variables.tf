variable "service_url" {
  description = "$SERVICE_URL: the DNS name of the server cluster's ingress (e.g. 35.200.0.10.nip.io). SNI on the cross-cluster hop and the DNS SAN of the server certificate."
  type        = string
}

variable "trust_domain" {
  description = "Trust domain of the mesh CA's SPIFFE identities (spiffe://TRUST_DOMAIN/ns/...)."
  type        = string
  default     = "cluster.local"
}

variable "egress_namespace" {
  description = "Namespace of the egress gateway, for its SPIFFE identity spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/strait-egress-gateway."
  type        = string
  default     = "strait"
}

variable "organization" {
  description = "Organization (O=) in every certificate subject."
  type        = string
  default     = "Strait demo"
}

variable "leaf_validity_hours" {
  description = "Lifetime of the server, client and mesh workload certificates, in hours (2160 = 90 days). Re-apply before expiry to rotate: the gateways reload the Secrets in place."
  type        = number
  default     = 2160
}

variable "ca_validity_hours" {
  description = "Lifetime of the root, intermediate and mesh CAs, in hours (87600 = 10 years)."
  type        = number
  default     = 87600
}

variable "kubeconfig_path" {
  description = "The kubeconfig file holding both contexts."
  type        = string
  default     = "~/.kube/config"
}

variable "client_context" {
  description = "kubeconfig context of the client cluster (the egress goes there)."
  type        = string
}

variable "server_context" {
  description = "kubeconfig context of the server cluster (the ingress goes there; the tutorial's database must answer at mysql.default.svc.cluster.local:3306)."
  type        = string
}

variable "image" {
  description = "The Strait image your CI pushed from the repository's Dockerfile (REGISTRY/strait@sha256:...)."
  type        = string
}

variable "service_url" {
  description = "$SERVICE_URL, a DNS name that resolves to the ingress's load balancer. null: ADDRESS.nip.io with the reserved ingress_address, or else with the address the cloud gives the Service."
  type        = string
  default     = null
}

variable "ingress_address" {
  description = "A reserved address for the ingress's LoadBalancer Service (null lets the cloud pick one)."
  type        = string
  default     = null
}

variable "client_source_cidrs" {
  description = "The client cluster's outbound (NAT) addresses, the only sources the ingress's load balancer admits. Empty admits any source; mutual TLS still applies."
  type        = list(string)
  default     = []
}

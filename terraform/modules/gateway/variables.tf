variable "role" {
  description = "Which gateway: \"egress\" (client cluster; ClusterIP Service on 3306 and 15443) or \"ingress\" (server cluster; LoadBalancer Service on 13306)."
  type        = string
  validation {
    condition     = contains(["egress", "ingress"], var.role)
    error_message = "role must be \"egress\" or \"ingress\"."
  }
}

variable "namespace" {
  description = "Namespace the gateway runs in (created by this module)."
  type        = string
  default     = "strait"
}

variable "image" {
  description = "The Strait image (built from the repository's Dockerfile), by tag or better by digest: REGISTRY/strait@sha256:..."
  type        = string
}

variable "config" {
  description = "The gateway's strait.toml (ConfigMap key strait.toml): deploy/kubernetes/overlays/*/strait.toml with $SERVICE_URL filled in. Its [health] and [metrics] addresses must be 0.0.0.0:15021 and 0.0.0.0:15090 (the probes, scrape annotations and NetworkPolicy of deploy/kubernetes/base), its [admin] address on loopback, and its credential dirs the paths in `credentials`."
  type        = string
}

variable "credentials" {
  description = "Credential mounts by short name (client, mesh, server): each becomes a Secret strait-ROLE-NAME of type kubernetes.io/tls, mounted as a directory (kubelet layout) at the given path, which must be a `dir` in the config."
  type        = map(string)
}

variable "credential_data" {
  description = "Secret data for each name in `credentials`: tls.crt, tls.key, ca.crt (the pki module's outputs)."
  type        = map(map(string))
  sensitive   = true
}

variable "cluster_id" {
  description = "The cluster's ID in the mesh (ISTIO_META_CLUSTER_ID): source_cluster (egress) or destination_cluster (ingress) of Istio's istio_tcp_* metrics. null: the overlays' client-cluster / server-cluster."
  type        = string
  default     = null
}

variable "load_balancer_ip" {
  description = "Ingress only: a reserved static address for the LoadBalancer Service, so $SERVICE_URL is known before the Service exists. null lets the cloud pick one."
  type        = string
  default     = null
}

variable "load_balancer_source_ranges" {
  description = "Ingress only: CIDRs allowed to reach the LoadBalancer (the client cluster's NAT addresses). Empty allows any source; mutual TLS still applies."
  type        = list(string)
  default     = []
}

variable "labels" {
  description = "Extra labels on every object and pod (the selector labels app.kubernetes.io/{name,part-of,component} are always set)."
  type        = map(string)
  default     = {}
}

variable "project_id" {
  description = "GCP project of the cluster."
  type        = string
}

variable "region" {
  description = "Region of the (regional) cluster; its nodes spread over `zones`."
  type        = string
}

variable "zones" {
  description = "Zones of the node pool (at least two: the gateways spread across zones)."
  type        = list(string)
}

variable "name" {
  description = "Cluster name."
  type        = string
}

variable "network_self_link" {
  description = "The VPC (network module's network_self_link)."
  type        = string
}

variable "subnet" {
  description = "The subnet and its secondary range names (one entry of the network module's `subnets`)."
  type = object({
    self_link           = string
    pods_range_name     = string
    services_range_name = string
  })
}

variable "master_ipv4_cidr" {
  description = "The /28 of the private control plane's endpoint (must not overlap any subnet)."
  type        = string
}

variable "master_authorized_cidrs" {
  description = "CIDRs allowed to reach the control plane's public endpoint (where you run terraform and kubectl)."
  type        = list(string)
}

variable "machine_type" {
  description = "Node machine type."
  type        = string
  default     = "e2-standard-2"
}

variable "nodes_per_zone" {
  description = "Nodes per zone in the node pool (autoscaled up to 3x)."
  type        = number
  default     = 1
}

variable "release_channel" {
  description = "GKE release channel (REGULAR ships 1.32+, the oldest Kubernetes the manifests are validated against)."
  type        = string
  default     = "REGULAR"
}

variable "deletion_protection" {
  description = "Refuse `terraform destroy` of the cluster (set false for a demo you will tear down)."
  type        = bool
  default     = true
}

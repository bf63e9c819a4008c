variable "project_id" {
  description = "GCP project the VPC is created in."
  type        = string
}

variable "region" {
  description = "Region of the subnets, the Cloud Router and the NAT (e.g. us-central1)."
  type        = string
}

variable "name" {
  description = "Name of the VPC; the router, NAT and addresses are named after it."
  type        = string
}

variable "subnets" {
  description = "Private subnets by name: node range `cidr`, and the secondary ranges `pods_cidr` and `services_cidr` GKE's VPC-native clusters use."
  type = map(object({
    cidr          = string
    pods_cidr     = string
    services_cidr = string
  }))
}

variable "client_project_id" {
  description = "GCP project of the client cluster (the egress and the app that runs the tutorial's SQL). May be the same as server_project_id."
  type        = string
}

variable "server_project_id" {
  description = "GCP project of the server cluster (the ingress and the tutorial's database)."
  type        = string
}

variable "region" {
  description = "Region of both clusters, their subnets and NATs."
  type        = string
  default     = "us-central1"
}

variable "zones" {
  description = "Zones of both clusters' node pools (two or more: the gateways spread across zones)."
  type        = list(string)
  default     = ["us-central1-a", "us-central1-b"]
}

variable "operator_cidrs" {
  description = "CIDRs that may reach both control planes (where you run terraform and kubectl), e.g. [\"203.0.113.4/32\"]."
  type        = list(string)
}

variable "image" {
  description = "The Strait image your CI pushed from the repository's Dockerfile, e.g. us-central1-docker.pkg.dev/PROJECT/strait/strait@sha256:... (the nodes can read Artifact Registry in their project)."
  type        = string
}

variable "database_image" {
  description = "Image of the tutorial's database in the server cluster and of the one-off client pod (MariaDB speaks the MySQL protocol; its client is the `mariadb` command)."
  type        = string
  default     = "docker.io/library/mariadb:11.4"
}

variable "deletion_protection" {
  description = "Protect both clusters from `terraform destroy` (false for a demo you will tear down)."
  type        = bool
  default     = false
}

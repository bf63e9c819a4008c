# The gateways and the PKI on two clusters you already have (any conformant Kubernetes
# 1.32+ with LoadBalancer Services): the same modules as gke-two-clusters, without the
# cloud. terraform init && terraform apply -var client_context=... -var server_context=...

locals {
  overlays    = "${path.module}/../../../deploy/kubernetes/overlays"
  placeholder = "35.200.0.10.nip.io" # the $SERVICE_URL the overlays' strait.toml ship with
  # Without a name or a reserved address, the name follows the address the cloud assigns
  # to the ingress's Service (Terraform creates that Service before the certificates).
  service_url = coalesce(var.service_url, "${coalesce(var.ingress_address, module.ingress.load_balancer_address)}.nip.io")
}

provider "kubernetes" {
  alias          = "client"
  config_path    = var.kubeconfig_path
  config_context = var.client_context
}

provider "kubernetes" {
  alias          = "server"
  config_path    = var.kubeconfig_path
  config_context = var.server_context
}

module "pki" {
  source      = "../../modules/pki"
  service_url = local.service_url
}

module "ingress" {
  source    = "../../modules/gateway"
  providers = { kubernetes = kubernetes.server }
  role      = "ingress"
  image     = var.image
  config    = replace(file("${local.overlays}/server-cluster/strait.toml"), local.placeholder, local.service_url)

  credentials     = { server = "/etc/strait/certs/server" }
  credential_data = { server = module.pki.ingress_server }

  load_balancer_ip            = var.ingress_address
  load_balancer_source_ranges = var.client_source_cidrs
}

module "egress" {
  source    = "../../modules/gateway"
  providers = { kubernetes = kubernetes.client }
  role      = "egress"
  image     = var.image
  config    = replace(file("${local.overlays}/client-cluster/strait.toml"), local.placeholder, local.service_url)

  credentials     = { client = "/etc/strait/certs/client", mesh = "/etc/strait/certs/mesh" }
  credential_data = { client = module.pki.egress_client, mesh = module.pki.egress_mesh }
}

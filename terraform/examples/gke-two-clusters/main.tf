# The tutorial, as code: two private GKE clusters in their own VPCs, the reference PKI, the
# egress in the client cluster, the ingress behind a reserved address in the server
# cluster ($SERVICE_URL = ADDRESS.nip.io), and the tutorial's database.
#
#   terraform init
#   terraform apply -target=module.gke_client -target=module.gke_server   # clusters first:
#   terraform apply                                                        # kubernetes_manifest plans against their API
#   eval "$(terraform output -raw mysql_command)"                          # the tutorial's SQL through the pair

locals {
  overlays    = "${path.module}/../../../deploy/kubernetes/overlays"
  placeholder = "35.200.0.10.nip.io" # the $SERVICE_URL the overlays' strait.toml ship with
  service_url = "${google_compute_address.ingress.address}.nip.io"
  projects    = { client = var.client_project_id, server = var.server_project_id }
  apis        = ["compute.googleapis.com", "container.googleapis.com"]
}

resource "google_project_service" "apis" {
  for_each           = { for pair in setproduct(keys(local.projects), local.apis) : "${pair[0]}/${pair[1]}" => { project = local.projects[pair[0]], api = pair[1] } }
  project            = each.value.project
  service            = each.value.api
  disable_on_destroy = false
}

module "network_client" {
  source     = "../../modules/network"
  project_id = var.client_project_id
  region     = var.region
  name       = "strait-client"
  subnets    = { client = { cidr = "10.10.0.0/20", pods_cidr = "10.12.0.0/14", services_cidr = "10.16.0.0/20" } }
  depends_on = [google_project_service.apis]
}

module "network_server" {
  source     = "../../modules/network"
  project_id = var.server_project_id
  region     = var.region
  name       = "strait-server"
  subnets    = { server = { cidr = "10.20.0.0/20", pods_cidr = "10.24.0.0/14", services_cidr = "10.28.0.0/20" } }
  depends_on = [google_project_service.apis]
}

module "gke_client" {
  source                  = "../../modules/gke"
  project_id              = var.client_project_id
  region                  = var.region
  zones                   = var.zones
  name                    = "strait-client"
  network_self_link       = module.network_client.network_self_link
  subnet                  = module.network_client.subnets["client"]
  master_ipv4_cidr        = "172.16.0.0/28"
  master_authorized_cidrs = var.operator_cidrs
  deletion_protection     = var.deletion_protection
}

module "gke_server" {
  source                  = "../../modules/gke"
  project_id              = var.server_project_id
  region                  = var.region
  zones                   = var.zones
  name                    = "strait-server"
  network_self_link       = module.network_server.network_self_link
  subnet                  = module.network_server.subnets["server"]
  master_ipv4_cidr        = "172.16.0.16/28"
  master_authorized_cidrs = var.operator_cidrs
  deletion_protection     = var.deletion_protection
}

# The ingress's address, reserved first so $SERVICE_URL (and the server certificate) exist
# before the Service does.
resource "google_compute_address" "ingress" {
  project    = var.server_project_id
  region     = var.region
  name       = "strait-ingress"
  depends_on = [google_project_service.apis]
}

data "google_client_config" "current" {}

provider "kubernetes" {
  alias                  = "client"
  host                   = module.gke_client.endpoint
  cluster_ca_certificate = module.gke_client.ca_certificate
  token                  = data.google_client_config.current.access_token
}

provider "kubernetes" {
  alias                  = "server"
  host                   = module.gke_server.endpoint
  cluster_ca_certificate = module.gke_server.ca_certificate
  token                  = data.google_client_config.current.access_token
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

  load_balancer_ip            = google_compute_address.ingress.address
  load_balancer_source_ranges = ["${module.network_client.nat_address}/32"]
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

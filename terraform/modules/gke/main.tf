# A private, VPC-native regional GKE cluster: private nodes (egress through the network's
# NAT), a control plane reachable only from master_authorized_cidrs, Dataplane V2 (network
# policy), Workload Identity, shielded COS nodes under a least-privilege service account.

resource "google_service_account" "nodes" {
  project      = var.project_id
  account_id   = "${var.name}-nodes"
  display_name = "GKE nodes of ${var.name}"
}

resource "google_project_iam_member" "nodes" {
  for_each = toset([
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
    "roles/artifactregistry.reader",
  ])
  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.nodes.email}"
}

resource "google_container_cluster" "cluster" {
  #checkov:skip=CKV_GCP_12:Dataplane V2 (datapath_provider ADVANCED_DATAPATH) enforces NetworkPolicy itself; the network_policy block is for Calico and is refused with it
  #checkov:skip=CKV_GCP_65:Google Groups for RBAC needs a Google Workspace domain, which two new projects need not have; add authenticator_groups_config where you have one
  project                     = var.project_id
  name                        = var.name
  location                    = var.region
  node_locations              = var.zones
  network                     = var.network_self_link
  subnetwork                  = var.subnet.self_link
  remove_default_node_pool    = true
  initial_node_count          = 1
  deletion_protection         = var.deletion_protection
  datapath_provider           = "ADVANCED_DATAPATH"
  enable_shielded_nodes       = true
  enable_intranode_visibility = true
  resource_labels             = { app = "strait" }

  release_channel {
    channel = var.release_channel
  }
  ip_allocation_policy {
    cluster_secondary_range_name  = var.subnet.pods_range_name
    services_secondary_range_name = var.subnet.services_range_name
  }
  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false
    master_ipv4_cidr_block  = var.master_ipv4_cidr
  }
  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.master_authorized_cidrs
      content {
        cidr_block   = cidr_blocks.value
        display_name = "operator ${cidr_blocks.value}"
      }
    }
  }
  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }
  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }
  binary_authorization {
    evaluation_mode = "PROJECT_SINGLETON_POLICY_ENFORCE"
  }
  logging_config {
    enable_components = ["SYSTEM_COMPONENTS", "WORKLOADS"]
  }
  monitoring_config {
    enable_components = ["SYSTEM_COMPONENTS"]
  }
  node_config {
    service_account = google_service_account.nodes.email
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    metadata = { disable-legacy-endpoints = "true" }
  }
}

resource "google_container_node_pool" "nodes" {
  project            = var.project_id
  name               = "${var.name}-nodes"
  location           = var.region
  cluster            = google_container_cluster.cluster.name
  initial_node_count = var.nodes_per_zone
  autoscaling {
    min_node_count = var.nodes_per_zone
    max_node_count = var.nodes_per_zone * 3
  }
  management {
    auto_repair  = true
    auto_upgrade = true
  }
  node_config {
    machine_type    = var.machine_type
    image_type      = "COS_CONTAINERD"
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    labels          = { app = "strait" }
    metadata        = { disable-legacy-endpoints = "true" }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}

# Serving: the API (python -m serving) on Cloud Run, behind the edge cache (infra/varnish, or Fastly /
# Cloudflare). Configuration by the environment names of serving/settings.py; secrets from Secret
# Manager by reference (only their names are here; values are added out of band, see README).

locals {
  # Knobs an operator may set through var.serving_settings (serving/settings.py is the one place for
  # their defaults, so nothing is repeated here). tests/infra/test_terraform.py checks that every
  # CLIFFHANGER_* name serving reads is either here, set below, or a secret.
  serving_tunable_env = [
    "CLIFFHANGER_BUDGET_MS",
    "CLIFFHANGER_FEATURE_TIMEOUT_MS",
    "CLIFFHANGER_RETRIEVAL_TIMEOUT_MS",
    "CLIFFHANGER_CANDIDATES",
    "CLIFFHANGER_MAX_PER_SERIES",
    "CLIFFHANGER_BLEND",
    "CLIFFHANGER_CACHE_TTL_S",
    "CLIFFHANGER_CACHE_SWR_S",
    "CLIFFHANGER_CACHE_MAX_ENTRIES",
    "CLIFFHANGER_SHARED_TTL_S",
    "CLIFFHANGER_BUNDLE_POLL_S",
    "CLIFFHANGER_DEFAULT_COUNTRY",
    "CLIFFHANGER_DEFAULT_DEVICE",
    "CLIFFHANGER_CATALOG_SUBSCRIPTION",
    "CLIFFHANGER_ITEM_CHANGES_SUBSCRIPTION",
    "CLIFFHANGER_DROP_WINDOW_S",
    "CLIFFHANGER_DROP_TTL_S",
    "CLIFFHANGER_HOT_TTL_MAX_S",
    "CLIFFHANGER_REPLICA_RECONCILE_S",
    "CLIFFHANGER_PLAYLIST_EPISODES",
    "CLIFFHANGER_SEGMENT_S",
    "CLIFFHANGER_CHUNK_DIR",
  ]

  bundles_mount = "/mnt/bundles"

  # Set by this stack (they name resources it creates). The bundle root is read through the GCS API,
  # not the mount, so a publish (one CURRENT object write) is seen at once; the catalog is read once
  # at start-up from the read-only mount (Catalog.load opens a local path).
  serving_env = merge(var.serving_settings, {
    CLIFFHANGER_PROJECT     = var.project_id
    CLIFFHANGER_BT_INSTANCE = google_bigtable_instance.this.name
    CLIFFHANGER_BUNDLE_ROOT = "gs://${google_storage_bucket.bundles.name}/bundles"
    CLIFFHANGER_CATALOG     = "${local.bundles_mount}/${var.catalog_object}"
  })

  # Serving applies catalog events (CLIFFHANGER_CATALOG_SUBSCRIPTION) and episode notices for its edge
  # replica (CLIFFHANGER_ITEM_CHANGES_SUBSCRIPTION) from its own subscriptions.
  serving_subscriptions = ["catalog-serving", "item-changes-serving"]
}

resource "google_service_account" "serving" {
  account_id   = "cliffhanger-api-${var.env}"
  display_name = "Cliffhanger serving API (${var.env})"
  depends_on   = [google_project_service.api]
}

# Secret containers only: no google_secret_manager_secret_version here, so no value is ever in the
# configuration or the state. Add versions with `gcloud secrets versions add` (README).
resource "google_secret_manager_secret" "edge_key" {
  secret_id = "cliffhanger-${var.env}-edge-key-secret"

  replication {
    auto {}
  }

  depends_on = [google_project_service.api]
}

resource "google_secret_manager_secret" "admin_token" {
  secret_id = "cliffhanger-${var.env}-admin-token"

  replication {
    auto {}
  }

  depends_on = [google_project_service.api]
}

resource "google_secret_manager_secret_iam_member" "serving_edge_key" {
  secret_id = google_secret_manager_secret.edge_key.id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.serving.member
}

resource "google_secret_manager_secret_iam_member" "serving_admin_token" {
  secret_id = google_secret_manager_secret.admin_token.id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.serving.member
}

resource "google_storage_bucket_iam_member" "serving_bundle_reader" {
  bucket = google_storage_bucket.bundles.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.serving.member
}

resource "google_pubsub_subscription_iam_member" "serving_subscriber" {
  for_each = toset(local.serving_subscriptions)

  subscription = google_pubsub_subscription.subscription[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = google_service_account.serving.member
}

# Several replicas per host (python -m serving --replicas N, behind the host's Varnish): each replica
# creates and pulls its own `<subscription>-<replica id>` of the two feeds above, since Pub/Sub splits
# one subscription's messages between its subscribers. Creating one needs pubsub.subscriptions.create
# on the project and pubsub.topics.attachSubscription on the topic; pulling it needs
# pubsub.subscriptions.consume on it. The created names are not known here, so that much is granted on
# the project through a custom role, conditioned on the two name prefixes (unverified here: whether
# Pub/Sub evaluates resource.name conditions needs a real project; see README "Things to know").
# The subscriptions expire after a day without a subscriber (serving/pubsub_pull.py).
locals {
  serving_replica_subscription_prefixes = [for name in local.serving_subscriptions : "projects/${var.project_id}/subscriptions/${name}-"]
  serving_subscription_topics           = toset([for name in local.serving_subscriptions : local.pubsub_subscriptions[name].topic])
}

resource "google_project_iam_custom_role" "serving_replica_subscriptions" {
  project     = var.project_id
  role_id     = "cliffhanger_serving_replica_subs_${replace(var.env, "-", "_")}"
  title       = "Cliffhanger serving replica subscriptions (${var.env})"
  description = "Create and pull a serving replica's own subscriptions to the catalog and item-changes topics."
  permissions = ["pubsub.subscriptions.create", "pubsub.subscriptions.consume"]
}

resource "google_project_iam_member" "serving_replica_subscriptions" {
  project = var.project_id
  role    = google_project_iam_custom_role.serving_replica_subscriptions.id
  member  = google_service_account.serving.member

  condition {
    title      = "serving replica subscriptions only"
    expression = join(" || ", [for prefix in local.serving_replica_subscription_prefixes : "resource.name.startsWith(\"${prefix}\")"])
  }
}

# roles/pubsub.subscriber on a topic is what grants pubsub.topics.attachSubscription there.
resource "google_pubsub_topic_iam_member" "serving_attach" {
  for_each = local.serving_subscription_topics

  topic  = google_pubsub_topic.topic[each.key].name
  role   = "roles/pubsub.subscriber"
  member = google_service_account.serving.member
}

resource "google_cloud_run_v2_service" "serving" {
  # Off on the first apply: a revision only becomes ready once the secrets have versions and a
  # bundle is published (/readyz), which needs the buckets and topics this stack creates (README).
  count = var.deploy_serving ? 1 : 0

  name                = "cliffhanger-serving-${var.env}"
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_ALL"
  deletion_protection = var.deletion_protection

  template {
    service_account       = google_service_account.serving.email
    execution_environment = "EXECUTION_ENVIRONMENT_GEN2" # Cloud Storage volume mounts need gen2

    scaling {
      min_instance_count = var.serving_min_instances
      max_instance_count = var.serving_max_instances
    }

    volumes {
      name = "bundles"
      gcs {
        bucket    = google_storage_bucket.bundles.name
        read_only = true
      }
    }

    containers {
      image   = var.serving_image
      command = ["python", "-m", "serving"]
      args    = ["--host", "0.0.0.0", "--port", "8080"]

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.serving_cpu
          memory = var.serving_memory
        }
        # CPU stays allocated between requests: the bundle watcher polls CURRENT and the catalog and
        # notice feeds pull Pub/Sub in the background; throttled, a new bundle, an episode drop or a hot
        # episode's new counters would be missed.
        cpu_idle          = false
        startup_cpu_boost = true
      }

      volume_mounts {
        name       = "bundles"
        mount_path = local.bundles_mount
      }

      dynamic "env" {
        for_each = local.serving_env
        content {
          name  = env.key
          value = env.value
        }
      }

      env {
        name = "CLIFFHANGER_EDGE_KEY_SECRET"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.edge_key.secret_id
            version = "latest"
          }
        }
      }

      dynamic "env" {
        for_each = var.admin_api_enabled ? ["CLIFFHANGER_ADMIN_TOKEN"] : []
        content {
          name = env.value
          value_source {
            secret_key_ref {
              secret  = google_secret_manager_secret.admin_token.secret_id
              version = "latest"
            }
          }
        }
      }

      # /readyz answers 503 until the catalog, the Bigtable client and a bundle are loaded.
      startup_probe {
        http_get {
          path = "/readyz"
        }
        period_seconds    = 5
        timeout_seconds   = 3
        failure_threshold = 60
      }

      liveness_probe {
        http_get {
          path = "/healthz"
        }
        period_seconds = 15
      }
    }
  }

  lifecycle {
    precondition {
      condition     = length(setsubtract(keys(var.serving_settings), local.serving_tunable_env)) == 0
      error_message = "serving_settings: unknown or stack-owned names ${join(", ", setsubtract(keys(var.serving_settings), local.serving_tunable_env))}; allowed: local.serving_tunable_env in serving.tf."
    }
  }

  depends_on = [
    google_secret_manager_secret_iam_member.serving_edge_key,
    google_secret_manager_secret_iam_member.serving_admin_token,
    google_storage_bucket_iam_member.serving_bundle_reader,
    google_bigtable_instance_iam_member.serving_reader,
  ]
}

resource "google_cloud_run_v2_service_iam_member" "invoker" {
  for_each = var.deploy_serving ? toset(var.serving_invokers) : toset([])

  name     = google_cloud_run_v2_service.serving[0].name
  location = google_cloud_run_v2_service.serving[0].location
  role     = "roles/run.invoker"
  member   = each.key
}

# Dataflow: the worker service account, its least-privilege grants, and the pipeline bucket.
#
# Two buckets, not one: versioning is a bucket-wide setting and belongs to bundles (a previous CURRENT
# or a bad bundle must be recoverable), while Dataflow temp files churn and should simply expire; and
# serving's read grant should cover bundles + the catalog, not the pipelines' temp and staging files.
#
#   pipeline bucket  gs://<project>-cliffhanger-<env>-pipeline/{tmp,staging}/   --temp_location / --staging_location
#   bundle bucket    gs://<project>-cliffhanger-<env>-bundles/bundles/           --bundle_root, CLIFFHANGER_BUNDLE_ROOT
#                    gs://<project>-cliffhanger-<env>-bundles/world/catalog.json --catalog, CLIFFHANGER_CATALOG (mounted)
#                    gs://<project>-cliffhanger-<env>-bundles/export/            event-log exports for pipelines/train.py

locals {
  # What each Dataflow job reads and publishes: the defaults of its flags in pipelines/*.py (a test
  # checks them). Grants below are per subscription / topic, never project-wide Pub/Sub roles.
  dataflow_jobs = {
    streaming_features = { subscriptions = ["events-features"], topics = ["feature-changes", "item-changes", "events-dead-letter"] }
    candidates         = { subscriptions = ["feature-changes-candidates", "catalog-candidates"], topics = ["candidate-changes", "candidates-dead-letter"] }
    invalidation       = { subscriptions = ["feature-changes-invalidation", "catalog-invalidation", "candidate-changes-invalidation"], topics = ["purge-dead-letter"] }
    prewarm            = { subscriptions = ["events-prewarm"], topics = [] }
  }

  dataflow_subscriptions = toset(flatten([for job in values(local.dataflow_jobs) : job.subscriptions]))
  dataflow_topics        = toset(flatten([for job in values(local.dataflow_jobs) : job.topics]))
}

resource "google_service_account" "dataflow" {
  account_id   = "cliffhanger-df-${var.env}"
  display_name = "Cliffhanger Dataflow workers (${var.env})"
  depends_on   = [google_project_service.api]
}

# dataflow.worker can only be granted on the project (it covers the job's own work items and metrics).
resource "google_project_iam_member" "dataflow_worker" {
  project = var.project_id
  role    = "roles/dataflow.worker"
  member  = google_service_account.dataflow.member
}

# Whoever launches the jobs with --service_account_email needs to act as the worker account.
resource "google_service_account_iam_member" "dataflow_launcher" {
  for_each = toset(var.dataflow_launchers)

  service_account_id = google_service_account.dataflow.name
  role               = "roles/iam.serviceAccountUser"
  member             = each.key
}

resource "google_pubsub_subscription_iam_member" "dataflow_subscriber" {
  for_each = local.dataflow_subscriptions

  subscription = google_pubsub_subscription.subscription[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = google_service_account.dataflow.member
}

# The Dataflow Pub/Sub source reads the subscription's metadata (pubsub.subscriptions.get), which
# roles/pubsub.subscriber does not include.
resource "google_pubsub_subscription_iam_member" "dataflow_viewer" {
  for_each = local.dataflow_subscriptions

  subscription = google_pubsub_subscription.subscription[each.key].name
  role         = "roles/pubsub.viewer"
  member       = google_service_account.dataflow.member
}

resource "google_pubsub_topic_iam_member" "dataflow_publisher" {
  for_each = local.dataflow_topics

  topic  = google_pubsub_topic.topic[each.key].name
  role   = "roles/pubsub.publisher"
  member = google_service_account.dataflow.member
}

resource "google_storage_bucket" "pipeline" {
  #checkov:skip=CKV_GCP_78:temp/staging files are reproducible per launch; versioning would only keep churn
  name                        = "${var.project_id}-cliffhanger-${var.env}-pipeline"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  # Temp files are per job run; staging files are NOT expired: a streaming job's new workers
  # (autoscaling, restarts) download the staged packages for as long as the job runs.
  lifecycle_rule {
    condition {
      age            = var.temp_retention_days
      matches_prefix = ["tmp/"]
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.api]
}

resource "google_storage_bucket" "bundles" {
  name                        = "${var.project_id}-cliffhanger-${var.env}-bundles"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  # CURRENT is rewritten on every publish; versioning keeps the previous pointers and bundles.
  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.bundle_noncurrent_retention_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.api]
}

resource "google_storage_bucket_iam_member" "dataflow_pipeline_bucket" {
  bucket = google_storage_bucket.pipeline.name
  role   = "roles/storage.objectAdmin"
  member = google_service_account.dataflow.member
}

# objectAdmin, not objectViewer: pipelines/train.py's Beam step writes <bundle-root>/.training-data and
# the bundle writer rewrites CURRENT (an overwrite needs delete). One worker account serves all jobs;
# split it per job if the streaming jobs must not be able to write bundles.
resource "google_storage_bucket_iam_member" "dataflow_bundle_bucket" {
  bucket = google_storage_bucket.bundles.name
  role   = "roles/storage.objectAdmin"
  member = google_service_account.dataflow.member
}

# The invalidation job hashes user ids with the edge key (CLIFFHANGER_EDGE_KEY_SECRET) on the workers.
resource "google_secret_manager_secret_iam_member" "dataflow_edge_key" {
  secret_id = google_secret_manager_secret.edge_key.id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.dataflow.member
}

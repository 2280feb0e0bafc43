output "bigtable_instance" {
  description = "--bigtable_instance for the jobs; CLIFFHANGER_BT_INSTANCE for serving."
  value       = google_bigtable_instance.this.name
}

output "topics" {
  description = "Topic ids by name."
  value       = { for name, t in google_pubsub_topic.topic : name => t.id }
}

output "subscriptions" {
  description = "Subscription ids by name."
  value       = { for name, s in google_pubsub_subscription.subscription : name => s.id }
}

output "pipeline_bucket" {
  description = "Dataflow temp and staging bucket."
  value       = google_storage_bucket.pipeline.name
}

output "bundle_bucket" {
  description = "Model bundles, catalog and event-log exports."
  value       = google_storage_bucket.bundles.name
}

output "dataflow_service_account" {
  description = "--service_account_email for every Dataflow job."
  value       = google_service_account.dataflow.email
}

output "serving_service_account" {
  description = "Identity of the Cloud Run service."
  value       = google_service_account.serving.email
}

output "serving_url" {
  description = "Origin URL for the edge cache's backend (null until deploy_serving = true)."
  value       = one(google_cloud_run_v2_service.serving[*].uri)
}

output "edge_key_secret" {
  description = "Secret Manager id of CLIFFHANGER_EDGE_KEY_SECRET (add a version before the first deploy)."
  value       = google_secret_manager_secret.edge_key.secret_id
}

output "admin_token_secret" {
  description = "Secret Manager id of CLIFFHANGER_ADMIN_TOKEN."
  value       = google_secret_manager_secret.admin_token.secret_id
}

output "dataflow_flags" {
  description = "The flags every job takes on Dataflow (append the job's own)."
  value = join(" ", [
    "--runner DataflowRunner",
    "--project ${var.project_id}",
    "--region ${var.region}",
    "--temp_location gs://${google_storage_bucket.pipeline.name}/tmp",
    "--staging_location gs://${google_storage_bucket.pipeline.name}/staging",
    "--service_account_email ${google_service_account.dataflow.email}",
    "--bigtable_instance ${google_bigtable_instance.this.name}",
    "--setup_file ./setup.py",
  ])
}

# The APIs this stack uses. disable_on_destroy = false: other stacks in the project may use them too.
resource "google_project_service" "api" {
  for_each = toset([
    "bigtable.googleapis.com",
    "bigtableadmin.googleapis.com",
    "dataflow.googleapis.com",
    "iam.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ])

  service            = each.key
  disable_on_destroy = false
}

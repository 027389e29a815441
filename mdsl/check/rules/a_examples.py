"""The whole plans the A1xx pages show: a Gitea move between two hosts laid out the same way, a
Mastodon move from a source install to the NixOS module, and a Nextcloud move to a bigger disk.
Each is safe as written; the pages' bad plans are these with one line changed."""

from __future__ import annotations

GITEA = '''plan "Gitea: git-old -> git-new"

host old { ssh = "root@git-old.example.net" }
host new { ssh = "root@git-new.example.net" }

sqlite old_db on old { path = "/var/lib/gitea/data/gitea.db" }
sqlite new_db on new { path = "/var/lib/gitea/data/gitea.db"  owner = "git:git"  fresh = true }
dir old_repos on old { path = "/var/lib/gitea/data/gitea-repositories"  owner = "git:git" }
dir new_repos on new { path = "/var/lib/gitea/data/gitea-repositories"  owner = "git:git"  fresh = true }
dir old_files on old { path = "/var/lib/gitea/data/files"  owner = "git:git" }
dir new_files on new { path = "/var/lib/gitea/data/files"  owner = "git:git"  fresh = true }
file old_ini on old { path = "/etc/gitea/app.ini"  secret = true }
file new_ini on new { path = "/etc/gitea/app.ini"  owner = "root:git"  mode = "0640"  secret = true  fresh = true }

service old_gitea on old {
  app = "gitea"  layout = "binary"
  systemd = ["gitea"]  writes = [old_db, old_repos, old_files]  reads = [old_ini]
}
service new_gitea on new {
  app = "gitea"  layout = "binary"
  systemd = ["gitea"]  writes = [new_db, new_repos, new_files]  reads = [new_ini]  initially = stopped
}

steps {
  stop old_gitea
  dump old_db to old:"/root/gitea.db"
  sync old_repos to new_repos
  archive old_files to old:"/root/files.tar.gz"
  transfer old:"/root/gitea.db" to new:"/root/gitea.db"
  transfer old:"/root/files.tar.gz" to new:"/root/files.tar.gz"
  transfer old_ini to new_ini
  restore new:"/root/gitea.db" into new_db replace
  extract new:"/root/files.tar.gz" into new_files
  start new_gitea
  run new "sudo -u git gitea admin regenerate hooks --config /etc/gitea/app.ini" reads = [new_ini] writes = [new_repos]
}
'''

MASTODON = '''plan "Mastodon: from source (old) to the NixOS module (new)"

host old { ssh = "root@old.example.social" }
host new { ssh = "root@new.example.social" }

postgres old_db on old { database = "mastodon_production"  run_as = "mastodon" }
postgres new_db on new { database = "mastodon"  run_as = "mastodon"  fresh = true }
dir old_system on old { path = "/home/mastodon/live/public/system"  owner = "mastodon:mastodon" }
dir new_system on new { path = "/var/lib/mastodon/public-system"  owner = "mastodon:mastodon"  fresh = true }
file old_env on old { path = "/home/mastodon/live/.env.production"  secret = true }
file new_env on new {
  path  = "/var/lib/mastodon/secrets/env.production"
  owner = "mastodon:mastodon"  mode = "0600"  secret = true  fresh = true
}

service old_app on old {
  app = "mastodon"  layout = "source"
  systemd = ["mastodon-web", "mastodon-sidekiq", "mastodon-streaming"]
  writes = [old_db, old_system]  reads = [old_env]
}
service new_app on new {
  app = "mastodon"  layout = "nixos"
  systemd = ["mastodon-web", "mastodon-sidekiq-all", "mastodon-streaming.target"]
  writes = [new_db, new_system]  reads = [new_env]  initially = stopped
}

steps {
  stop old_app
  dump old_db to old:"/root/mastodon.dump"
  archive old_system to old:"/root/system.tar.zst" compress = zstd
  transfer old:"/root/mastodon.dump" to new:"/root/mastodon.dump"
  transfer old:"/root/system.tar.zst" to new:"/root/system.tar.zst"
  transfer old_env to new_env
  restore new:"/root/mastodon.dump" into new_db replace
  extract new:"/root/system.tar.zst" into new_system
  run new "mastodon-tootctl feeds build" reads = [new_db]
  start new_app
}
'''

NEXTCLOUD = '''plan "Nextcloud: cloud-old -> cloud-new"

host old { ssh = "root@cloud-old.example.org" }
host new { ssh = "root@cloud-new.example.org" }

postgres old_db on old { database = "nextcloud"  run_as = "postgres" }
postgres new_db on new { database = "nextcloud"  run_as = "postgres"  fresh = true }
dir old_data on old { path = "/var/www/nextcloud/data"  owner = "www-data:www-data" }
dir new_data on new { path = "/var/www/nextcloud/data"  owner = "www-data:www-data"  fresh = true }
file old_config on old { path = "/var/www/nextcloud/config/config.php"  secret = true }
file new_config on new {
  path = "/var/www/nextcloud/config/config.php"  owner = "www-data:www-data"  mode = "0640"  secret = true  fresh = true
}

service old_cloud on old {
  app = "nextcloud"  layout = "archive"
  systemd = ["apache2"]  writes = [old_db, old_data, old_config]
}
service new_cloud on new {
  app = "nextcloud"  layout = "archive"
  systemd = ["apache2"]  writes = [new_db, new_data, new_config]  initially = stopped
}

steps {
  run old "sudo -u www-data php /var/www/nextcloud/occ maintenance:mode --on" writes = [old_config]
  stop old_cloud
  dump old_db to old:"/root/nextcloud.dump"
  sync old_data to new_data
  transfer old:"/root/nextcloud.dump" to new:"/root/nextcloud.dump"
  transfer old_config to new_config
  restore new:"/root/nextcloud.dump" into new_db replace
  start new_cloud
  run new "sudo -u www-data php /var/www/nextcloud/occ maintenance:mode --off" writes = [new_config]
}
'''

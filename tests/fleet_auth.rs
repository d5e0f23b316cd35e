//! Who may write what in the fleet store, and how hosts prove who they
//! are, against a real PostgreSQL cluster the tests start (see
//! `common::pg`): row-level security ties each entry's host name to the
//! login role that claimed it; a password from `password_file` against a
//! server that asks for one (SCRAM); TLS with `verify-full`, a private
//! certificate authority (`sslrootcert`) and a client certificate
//! (`sslcert`, `sslkey`) for `cert` authentication. Needs root.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::pg::*;
use common::{PASSWORD, Sandbox};

/// A host whose `[fleet]` table is `fleet` (url and the rest), with one
/// login made so there is an entry to push.
fn host_with(fleet: &str) -> Sandbox {
    let sb = Sandbox::with_config("", &format!("[fleet]\n{fleet}\n"));
    sb.create_db_dir();
    assert!(sb.login("bob", PASSWORD, RHOST).ok);
    sb
}

fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The server's own message for `sql` run as `role`; panics if it worked.
fn refused(pg: &Pg, role: &str, sql: &str) -> String {
    let mut c = pg.client(role);
    let e = c.batch_execute(sql).expect_err(sql);
    e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string())
}

#[test]
fn a_host_role_adds_entries_only_under_the_host_name_it_claimed() {
    let Some((_one, pg)) = fleet_test(&["h1", "h2"]) else { return };
    let h1 = host_sandbox(&pg, "h1", "h1", "");
    let h2 = host_sandbox(&pg, "h2", "h2", "");
    for sb in [&h1, &h2] {
        assert!(!sb.login("alice", "wrong", RHOST).ok);
        sb.admin_ok(&["fleet", "sync"]);
    }
    assert_eq!(pg.count("SELECT count(*) FROM fleet_host WHERE host = role::text"), 2);

    // Role h1 cannot add rows under h2's name, also not through the group
    // role: the check is on the login role, which SET ROLE does not change.
    let row = "INSERT INTO fleet_log (host, generation, local_id, time, success, \"user\") \
               VALUES ('h2', 1, 999, 1, false, 'alice')";
    assert!(refused(&pg, "h1", row).contains("row-level security"));
    assert!(refused(&pg, "h1", &format!("SET ROLE useraudit_host; {row}")).contains("row-level security"));
    // Nor take the name, assign one to another role, or release one.
    for sql in [
        "UPDATE fleet_host SET role = 'h1' WHERE host = 'h2'",
        "DELETE FROM fleet_host WHERE host = 'h2'",
        "INSERT INTO fleet_host (host, role) VALUES ('h3', 'h2')",
    ] {
        assert!(refused(&pg, "h1", sql).contains("permission denied"), "{sql}");
    }
    // Its own name works, and the row names the login role.
    let mut c = pg.client("h1");
    c.batch_execute(&format!("SET ROLE useraudit_host; {}", row.replace("'h2'", "'h1'"))).unwrap();
    assert_eq!(pg.count("SELECT count(*) FROM fleet_log WHERE host = 'h1' AND local_id = 999 AND added_by = 'h1'"), 1);

    // A host set up with another host's name is told so, and adds nothing.
    let impostor = host_sandbox(&pg, "h1", "h2", "");
    assert!(!impostor.login("carol", "wrong", RHOST).ok);
    let o = impostor.admin(&["fleet", "sync"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let e = stderr_of(&o);
    assert!(e.contains("host name h2 belongs to the role h2") && e.contains("connects as h1"), "{e}");
    assert_eq!(pg.count("SELECT count(*) FROM fleet_log WHERE \"user\" = 'carol'"), 0);

    // A fleet administrator may release a name and assign it to a role.
    let mut admin = pg.client("fadmin");
    admin.batch_execute("DELETE FROM fleet_host WHERE host = 'h2'").unwrap();
    admin.batch_execute("INSERT INTO fleet_host (host, role) VALUES ('h2', 'h1')").unwrap();
    impostor.admin_ok(&["fleet", "sync"]);
    assert_eq!(pg.count("SELECT count(*) FROM fleet_log WHERE \"user\" = 'carol' AND added_by = 'h1'"), 1);
    let o = h2.admin(&["fleet", "sync"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stderr_of(&o).contains("belongs to the role h1"), "{o:?}");
}

#[test]
fn fleet_init_on_a_schema_without_claims_gives_each_host_name_to_the_role_that_added_it() {
    let Some((_one, pg)) = fleet_test(&["h1", "h2"]) else { return };
    let hosts: Vec<Sandbox> = ["h1", "h2"].iter().map(|h| host_sandbox(&pg, h, h, "")).collect();
    for sb in &hosts {
        assert!(sb.login("bob", PASSWORD, RHOST).ok);
        sb.admin_ok(&["fleet", "sync"]);
    }
    // As a store looked before claims: no fleet_host, no row-level security.
    let mut c = pg.client("postgres");
    c.batch_execute(
        "DROP TABLE fleet_host CASCADE; ALTER TABLE fleet_log DISABLE ROW LEVEL SECURITY;
         UPDATE useraudit_meta SET value = '1' WHERE key = 'schema'",
    )
    .unwrap();
    // Hosts upgraded before `fleet init` runs go on pushing.
    for sb in &hosts {
        assert!(sb.login("carol", PASSWORD, RHOST).ok);
        let out = sb.admin_ok(&["fleet", "sync"]);
        assert!(out.contains("pushed 1 entry"), "{out}");
    }
    host_sandbox(&pg, "postgres", "init", "").admin_ok(&["fleet", "init"]);
    assert_eq!(pg.count("SELECT count(*) FROM fleet_host WHERE host = role::text AND host IN ('h1', 'h2')"), 2);
    assert_eq!(pg.count("SELECT count(*) FROM useraudit_meta WHERE key = 'schema' AND value = '2'"), 1);
    // And then each only under its own name.
    let row = "INSERT INTO fleet_log (host, generation, local_id, time, success, \"user\") \
               VALUES ('h2', 1, 999, 1, false, 'alice')";
    assert!(refused(&pg, "h1", row).contains("row-level security"));
    for sb in &hosts {
        assert!(sb.login("dave", PASSWORD, RHOST).ok);
        sb.admin_ok(&["fleet", "sync"]);
    }
    assert_eq!(pg.count("SELECT count(*) FROM fleet_log WHERE \"user\" = 'dave' AND host::name = added_by"), 2);
}

#[test]
fn password_file_against_a_server_that_asks_for_a_password() {
    let Some((_one, pg)) = fleet_test(&["h1"]) else { return };
    pg.psql("ALTER ROLE h1 PASSWORD 'correct horse'");
    pg.stop();
    // The superuser keeps trust (the tests' own connections); every other
    // role must give its password (SCRAM-SHA-256, PostgreSQL 15's default).
    std::fs::write(pg.dir.path().join("data/pg_hba.conf"), "local all postgres trust\nlocal all all scram-sha-256\n")
        .unwrap();
    pg.start();
    let url = pg.url("h1");
    let with_password = |pw: &str, mode: u32| {
        let sb = host_with(&format!(
            "url = \"{url}\"\nhost = \"h1\"\npassword_file = \"{}\"",
            Path::new("/nonexistent").display()
        ));
        let file = sb.path().join("fleet-password");
        std::fs::write(&file, format!("{pw}\nnot this line\n")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let conf = std::fs::read_to_string(&sb.conf).unwrap().replace("/nonexistent", file.to_str().unwrap());
        std::fs::write(&sb.conf, conf).unwrap();
        sb
    };
    let out = with_password("correct horse", 0o600).admin_ok(&["fleet", "sync"]);
    assert!(out.contains("pushed 1 entry"), "{out}");
    assert_eq!(pg.count("SELECT count(*) FROM fleet_log WHERE added_by = 'h1'"), 1);

    let o = with_password("wrong horse", 0o600).admin(&["fleet", "sync"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stderr_of(&o).contains("password authentication failed for user \"h1\""), "{o:?}");
    // A file others may read is refused before it is used.
    let o = with_password("correct horse", 0o644).admin(&["fleet", "sync"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let e = stderr_of(&o);
    assert!(e.contains("fleet.password_file") && e.contains("readable by root only"), "{e}");
    // Without any password the server refuses, and nothing is lost.
    let sb = host_with(&format!("url = \"{url}\"\nhost = \"h1\""));
    let o = sb.admin(&["fleet", "sync"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stderr_of(&o).contains("password"), "{o:?}");
    assert_eq!(pg.count("SELECT count(*) FROM fleet_log"), 1);
}

/// `openssl` with `args`; panics with its stderr when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// A certificate authority `NAME.crt`/`NAME.key` in `dir`.
fn make_ca(dir: &Path, name: &str) {
    let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
    let subj = format!("/CN={name}");
    openssl(
        dir,
        &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", &subj, "-keyout", &key, "-out", &crt],
    );
}

/// A certificate `NAME.crt`/`NAME.key` for `cn` signed by the authority `ca`.
fn make_cert(dir: &Path, ca: &str, name: &str, cn: &str, san: Option<&str>) {
    let (crt, key, csr, ext) =
        (format!("{name}.crt"), format!("{name}.key"), format!("{name}.csr"), format!("{name}.ext"));
    let subj = format!("/CN={cn}");
    openssl(dir, &["req", "-newkey", "rsa:2048", "-nodes", "-subj", &subj, "-keyout", &key, "-out", &csr]);
    std::fs::write(dir.join(&ext), san.map(|s| format!("subjectAltName={s}\n")).unwrap_or_default()).unwrap();
    let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ],
    );
    std::fs::set_permissions(dir.join(&key), std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn tls_verify_full_with_a_private_authority_and_a_client_certificate() {
    let Some((_one, pg)) = fleet_test(&["h1"]) else { return };
    pg.stop();
    let d = pg.dir.path();
    let certs = tempfile::tempdir().unwrap();
    let c = certs.path();
    make_ca(c, "ca");
    make_ca(c, "other-ca");
    make_cert(c, "ca", "server", "localhost", Some("DNS:localhost"));
    make_cert(c, "ca", "h1", "h1", None);
    make_cert(c, "ca", "mallory", "mallory", None);
    for f in ["server.crt", "server.key", "ca.crt"] {
        std::fs::copy(c.join(f), d.join(f)).unwrap();
        assert!(Command::new("chown").arg("postgres:postgres").arg(d.join(f)).status().unwrap().success());
    }
    // Over TCP only TLS, and only with a client certificate whose name is
    // the role's (`cert` authentication): no password anywhere.
    std::fs::write(
        d.join("data/pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 cert\nhostnossl all all 127.0.0.1/32 reject\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    pg.start_with(&format!(
        "-p {port} -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={} -c ssl_key_file={} -c ssl_ca_file={}",
        d.join("server.crt").display(),
        d.join("server.key").display(),
        d.join("ca.crt").display()
    ));
    // The server's socket now carries its port in its name.
    let count = |sql: &str| -> i64 {
        let url = format!("host={} port={port} dbname=useraudit user=postgres", pg.sock().display());
        postgres::Client::connect(&url, postgres::NoTls).unwrap().query_one(sql, &[]).unwrap().get(0)
    };
    let p = |f: &str| c.join(f).display().to_string();
    let words = |host: &str, ca: &str, client: &str| {
        format!(
            "host={host} port={port} dbname=useraudit user=h1 connect_timeout=5 sslmode=verify-full \
             sslrootcert={} sslcert={} sslkey={}",
            p(&format!("{ca}.crt")),
            p(&format!("{client}.crt")),
            p(&format!("{client}.key"))
        )
    };
    let sync = |url: &str| host_with(&format!("url = \"{url}\"\nhost = \"h1\"")).admin(&["fleet", "sync"]);

    let o = sync(&words("localhost", "ca", "h1"));
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(count("SELECT count(*) FROM fleet_log WHERE added_by = 'h1'"), 1);
    // The URL form, with the file names percent-encoded.
    let enc = |f: &str| p(f).replace('/', "%2F");
    let url = format!(
        "postgresql://h1@localhost:{port}/useraudit?sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}&connect_timeout=5",
        enc("ca.crt"),
        enc("h1.crt"),
        enc("h1.key")
    );
    let o = sync(&url);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(count("SELECT count(*) FROM fleet_log WHERE added_by = 'h1'"), 2);

    // The server's certificate is not for 127.0.0.1, and not from other-ca.
    for (url, why) in [
        (words("127.0.0.1", "ca", "h1"), "certificate verify failed"),
        (words("localhost", "other-ca", "h1"), "certificate verify failed"),
        // A certificate of the authority, for another role.
        (words("localhost", "ca", "mallory"), "certificate authentication failed for user \"h1\""),
    ] {
        let o = sync(&url);
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        assert!(stderr_of(&o).contains(why), "{url}: {o:?}");
    }
    // A client key others may read is refused before it is used.
    std::fs::set_permissions(c.join("h1.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = sync(&words("localhost", "ca", "h1"));
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let e = stderr_of(&o);
    assert!(e.contains("fleet.url sslkey") && e.contains("readable by root only"), "{e}");
    assert_eq!(count("SELECT count(*) FROM fleet_log"), 2);
}

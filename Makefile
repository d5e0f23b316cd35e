# useraudit — build, test, demo, install.
#   make demo      build, then play real logins through real libpam in a sandbox
#   make demo-fleet  three simulated hosts on a throwaway PostgreSQL cluster:
#                  a password spray stopped fleet-wide (not part of make demo)
#   make test      the whole suite (unit, libpam integration, sshd end to end, packaging)
#   make install   install into $(DESTDIR)$(PREFIX) (never edits /etc/pam.d)
#   make deb       a Debian package (cargo-deb)
#   make bench     the benchmark against pam_faillock, the live log and the
#                  fleet on PostgreSQL (not part of make test)

PREFIX      ?= /usr
DESTDIR     ?=
SBINDIR     ?= $(PREFIX)/sbin
MANDIR      ?= $(PREFIX)/share/man
SYSCONFDIR  ?= /etc
STATEDIR    ?= /var/lib/useraudit
# The PAM module directory of this system: pam.pc's securedir where it has
# one, else libdir/security (Debian multiarch, /usr/lib64 on Fedora).
PAMDIR      ?= $(shell d=$$(pkg-config --variable=securedir pam 2>/dev/null); \
                 [ -n "$$d" ] || d=$$(pkg-config --variable=libdir pam 2>/dev/null)/security; \
                 [ "$$d" != /security ] || d=/usr/lib/$$(gcc -print-multiarch 2>/dev/null)/security; echo $$d)
UNITDIR     ?= $(PREFIX)/lib/systemd/system
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
PAMCONFIGS  ?= $(PREFIX)/share/pam-configs

CARGO       ?= cargo
SO          := target/release/libpam_useraudit.so
ADMIN       := target/release/useraudit-admin
DRIVE       := target/pam_drive

# Debian packages the build and the tests need.
DEB_DEPS := build-essential pkg-config libpam0g-dev pamtester libpam-wrapper libnss-wrapper \
            faketime bubblewrap openssh-server openssh-client sshpass sqlite3 python3 groff man-db rpm strace \
            prometheus postgresql libssl-dev openssl

.PHONY: all build deps demo demo-fleet test test-unit test-sshd test-packaging lint install uninstall deb bench fuzz clean

all: build

# A Cargo workspace: src/module (the PAM module, a cdylib alone, so linked
# with LTO), src/core (what a login decides and writes) and the root package
# (useraudit-admin). A plain `cargo build --release` is the shipped build.
build:
	$(CARGO) build --release --locked
	mkdir -p target
	$(CC) -O2 -Wall -Wextra -o $(DRIVE) tests/driver/pam_drive.c -lpam

# Install what is missing (as root with apt-get); otherwise say what to install.
deps:
	@missing=""; for p in $(DEB_DEPS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "please install:$$missing (apt-get install$$missing)"; exit 1; fi; \
	fi

demo: deps build
	bash tests/demo.sh

# Needs the postgresql package (deps installs it); as root the server runs
# as the postgres user. Everything it starts is stopped and removed.
demo-fleet: deps build
	bash tests/demo-fleet.sh

test: deps build test-unit lint test-sshd test-packaging

test-unit:
	$(CARGO) test --locked

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	sh tests/check-docs.sh
	sh tests/check-deps.sh

test-sshd:
	bash tests/sshd/e2e.sh
	bash tests/sshd/policy.sh

test-packaging: deb
	bash packaging/check-man.sh
	bash packaging/test-pam-auth-update.sh
	bash packaging/test-deb.sh
	bash packaging/test-install.sh
	bash packaging/test-rpm-spec.sh
	bash packaging/test-systemd.sh

install: build
	install -d -m 0755 $(DESTDIR)$(PAMDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	install -m 0644 -s $(SO) $(DESTDIR)$(PAMDIR)/pam_useraudit.so
	install -m 0755 $(ADMIN) $(DESTDIR)$(SBINDIR)/useraudit-admin
	install -m 0644 packaging/man/pam_useraudit.8 packaging/man/useraudit-admin.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 0644 packaging/man/useraudit.toml.5 $(DESTDIR)$(MANDIR)/man5/
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/security
	[ -e $(DESTDIR)$(SYSCONFDIR)/security/useraudit.toml ] || \
	  install -m 0644 conf/useraudit.toml $(DESTDIR)$(SYSCONFDIR)/security/useraudit.toml
	install -d -m 0700 $(DESTDIR)$(STATEDIR)
	install -D -m 0644 packaging/systemd/useraudit-sweep.service $(DESTDIR)$(UNITDIR)/useraudit-sweep.service
	install -D -m 0644 packaging/systemd/useraudit-sweep.timer $(DESTDIR)$(UNITDIR)/useraudit-sweep.timer
	install -D -m 0644 packaging/systemd/useraudit.service $(DESTDIR)$(UNITDIR)/useraudit.service
	install -D -m 0644 packaging/tmpfiles/useraudit.conf $(DESTDIR)$(TMPFILESDIR)/useraudit.conf
	@echo "installed pam_useraudit.so in $(PAMDIR); /etc/pam.d was not changed: see README.md"

uninstall:
	rm -f $(DESTDIR)$(PAMDIR)/pam_useraudit.so $(DESTDIR)$(SBINDIR)/useraudit-admin \
	      $(DESTDIR)$(MANDIR)/man8/pam_useraudit.8 $(DESTDIR)$(MANDIR)/man8/useraudit-admin.8 \
	      $(DESTDIR)$(MANDIR)/man5/useraudit.toml.5 \
	      $(DESTDIR)$(UNITDIR)/useraudit-sweep.service $(DESTDIR)$(UNITDIR)/useraudit-sweep.timer \
	      $(DESTDIR)$(UNITDIR)/useraudit.service \
	      $(DESTDIR)$(TMPFILESDIR)/useraudit.conf
	@echo "kept $(SYSCONFDIR)/security/useraudit.toml and $(STATEDIR); remove the pam_useraudit lines from /etc/pam.d first"

deb: build
	command -v cargo-deb >/dev/null || $(CARGO) install cargo-deb --locked
	$(CARGO) deb --no-build $(if $(filter arm64,$(shell dpkg --print-architecture 2>/dev/null)),--variant=arm64)

bench: deps build
	$(CARGO) build --release --locked --example bench-fill
	SO=$(SO) ADMIN=$(ADMIN) DRIVE=$(DRIVE) FILL=target/release/examples/bench-fill bash tests/bench/bench.sh
	SO=$(SO) ADMIN=$(ADMIN) python3 tests/bench/daemon.py
	SO=$(SO) ADMIN=$(ADMIN) FILL=target/release/examples/bench-fill python3 tests/bench/fleet.py

# Each cargo-fuzz target for FUZZ_SECONDS (needs cargo-fuzz; works on stable
# through RUSTC_BOOTSTRAP). Prints the executions run per target.
FUZZ_SECONDS ?= 60
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	sh fuzz/run.sh $(FUZZ_SECONDS)

clean:
	$(CARGO) clean

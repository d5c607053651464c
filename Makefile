# shareless: the two commands an operator or CI needs are `make demo` and
# `make test` (README.md). Both install their own dependencies.

GO       ?= go
BIN      := bin/shareless
PKGS     := ./...
# Real components are mandatory under make: a missing tool fails the test
# instead of skipping it.
export SHARELESS_STRICT := 1
# Tests append their measurements here; make test prints it at the end.
export SHARELESS_REPORT := $(CURDIR)/.work/test-report.txt
# Where the Cinder driver wrapper goes: the local site directory of the
# python3 that runs Cinder (Debian's: /usr/local/lib/python3.X/dist-packages).
PYSITE   ?= $(shell /usr/bin/python3 -c 'import sysconfig; print(sysconfig.get_path("purelib", "posix_local"))' 2>/dev/null)

.PHONY: all deps build test e2e e2e-nova unit fuzz lint bench demo install clean

all: build

deps:
	@scripts/deps.sh

build:
	$(GO) build -o $(BIN) ./cmd/shareless

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt: $$out"; exit 1; fi
	$(GO) vet $(PKGS)

test: deps build lint
	@mkdir -p .work && rm -f $(SHARELESS_REPORT)
	$(GO) test -count=1 -timeout 40m $(PKGS)
	tox -c tox-tests/tox.ini -e functional
	@$(MAKE) --no-print-directory fuzz
	@echo "== measurements reported by the tests"; cat $(SHARELESS_REPORT) 2>/dev/null || true

# The two-host live migration tests alone (e2e/, part of make test too),
# real Nova's included: root, about 8 minutes.
e2e: deps build
	@mkdir -p .work && rm -f $(SHARELESS_REPORT)
	$(GO) test -count=1 -timeout 30m ./e2e
	@echo "== measurements reported by the tests"; cat $(SHARELESS_REPORT) 2>/dev/null || true

# Real Nova with the libvirt driver on the lab's two hosts (e2e's
# TestNovaLibvirt, in make test too): root, about 5 minutes.
e2e-nova: deps build
	@mkdir -p .work && rm -f $(SHARELESS_REPORT)
	$(GO) test -count=1 -timeout 25m -run TestNovaLibvirt -v ./e2e
	@echo "== measurements reported by the tests"; cat $(SHARELESS_REPORT) 2>/dev/null || true

# Each fuzz target runs briefly on top of its seed corpus (which go test
# already replays above).
FUZZTIME ?= 10s
fuzz:
	@scripts/fuzz.sh $(FUZZTIME)

bench: deps build
	@scripts/bench.sh

demo: deps build
	$(BIN) demo

# install puts the binary, the sample configuration, the systemd unit, the
# libvirt hook and the Cinder driver wrapper (for Cinder volume nodes) in
# place (DESTDIR=dir stages them under dir). It never
# overwrites /etc/shareless/shareless.conf, and starts or restarts nothing.
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)/usr/local/bin/shareless
	install -D -m 0644 etc/shareless.conf.sample $(DESTDIR)/etc/shareless/shareless.conf.sample
	install -D -m 0644 etc/shareless-agent.service $(DESTDIR)/usr/local/lib/systemd/system/shareless-agent.service
	install -D -m 0755 etc/libvirt-hook-qemu $(DESTDIR)/etc/libvirt/hooks/qemu.d/shareless
	install -D -m 0644 README.md $(DESTDIR)/usr/share/doc/shareless/README.md
	install -D -m 0644 -t $(DESTDIR)$(PYSITE)/shareless_cinder cinderdriver/shareless_cinder/__init__.py cinderdriver/shareless_cinder/driver.py
	install -D -m 0644 cinderdriver/README.md $(DESTDIR)/usr/share/doc/shareless/cinder-driver.md
	@echo "installed. Next: cp /etc/shareless/shareless.conf.sample /etc/shareless/shareless.conf and"
	@echo "edit it ([amqp] transport_url, [iscsi], [api], [openstack]); systemctl daemon-reload;"
	@echo "systemctl enable --now shareless-agent; systemctl restart libvirtd (it reads hooks at start)."

clean:
	rm -rf bin

# nixcomply as a Python application (the flake's `packages.<system>.default`), and with
# `withServer = true` the MSP's evidence server (`packages.<system>.nixcomply-server`: the
# same package with the `server` extra's dependencies and `nixcomply-server` as its program).
{
  lib,
  stdenv,
  python3Packages,
  nix,
  git,
  withServer ? false,
}:
let
  version = builtins.head (
    builtins.match ''.*__version__: Final = "([^"]+)".*'' (builtins.readFile ./nixcomply/__init__.py)
  );
in
python3Packages.buildPythonApplication {
  pname = if withServer then "nixcomply-server" else "nixcomply";
  inherit version;
  pyproject = true;

  src = lib.fileset.toSource {
    root = ./.;
    fileset = lib.fileset.unions [
      ./pyproject.toml
      ./nixcomply
    ];
  };

  build-system = [ python3Packages.setuptools ];

  dependencies =
    with python3Packages;
    [
      pydantic
      pyyaml
      jinja2
      cryptography
    ]
    # the systemd adapter (health gate, service checks, runbook actions) talks D-Bus through pystemd
    ++ lib.optional stdenv.hostPlatform.isLinux pystemd
    # the `server` extra of pyproject.toml
    ++ lib.optionals withServer [
      fastapi
      uvicorn
      sqlalchemy
      psycopg
      alembic
    ];

  # Baselines and runbooks are data the CLI reads at run time.
  postInstall = ''
    mkdir -p $out/share/nixcomply
    cp -r ${../baseline} $out/share/nixcomply/baseline
    cp -r ${../runbooks} $out/share/nixcomply/runbooks
  '';

  makeWrapperArgs = [
    "--set-default"
    "NIXCOMPLY_DATA_DIR"
    "${placeholder "out"}/share/nixcomply"
    # the reconciler runs nix and git (flake metadata, builds, ancestry checks)
    "--suffix"
    "PATH"
    ":"
    (lib.makeBinPath [
      nix
      git
    ])
  ];

  # The test suite needs the real nix and a systemd user manager, which the build sandbox does
  # not have; the flake's `checks.<system>.python-unit` runs the part that works there.
  doCheck = false;
  pythonImportsCheck = [ "nixcomply" ] ++ lib.optional withServer "nixcomply.server.app";

  meta = {
    description = "NixOS-native compliance baselines, health-gated reconciliation and signed evidence";
    license = lib.licenses.mit;
    mainProgram = if withServer then "nixcomply-server" else "nixcomply";
    platforms = lib.platforms.linux;
  };
}

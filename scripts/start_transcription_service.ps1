# Start Sona as the persistent local transcription service that existing tools
# expect on http://127.0.0.1:8765: a container restarted unless stopped, its
# data on a named volume. Re-running it replaces the container (same data);
# a container of that name that this script did not start (no label
# sona.managed-by=start_transcription_service) is left alone, and it stops.
#
#   .\scripts\start_transcription_service.ps1          # CPU
#   .\scripts\start_transcription_service.ps1 -Gpu     # NVIDIA GPU (sona:cuda)
#
# Build the image first: docker build -f deploy/Dockerfile -t sona:cpu .
[CmdletBinding()]
param(
    [switch]$Gpu,
    [string]$Image = "",
    [int]$Port = 8765,
    [string]$Container = "sona",
    [string]$Volume = "sona-data"
)
$ErrorActionPreference = "Stop"

if (-not (Get-Command docker -ErrorAction SilentlyContinue)) {
    Write-Error "start_transcription_service: docker is not installed"
    exit 1
}
if (-not $Image) { $Image = if ($Gpu) { "sona:cuda" } else { "sona:cpu" } }
$gpuArgs = if ($Gpu) { @("--gpus", "all") } else { @() }

# Replace only a container this script created: it carries this label.
$ownerKey = "sona.managed-by"
$owner = "start_transcription_service"
# Windows PowerShell turns a native command's stderr into a terminating error
# under "Stop": "not found" lands in catch there, and in $LASTEXITCODE elsewhere.
$exists = $false
try {
    docker container inspect $Container 2>&1 | Out-Null
    $exists = ($LASTEXITCODE -eq 0)
} catch {
    $exists = $false
}
if ($exists) {
    # The labels as JSON: no quotes to pass through to docker's template.
    $labels = docker container inspect --format "{{json .Config.Labels}}" $Container | ConvertFrom-Json
    $found = if ($labels) { $labels.$ownerKey } else { $null }
    if ($found -ne $owner) {
        Write-Error ("start_transcription_service: a container named $Container exists and was " +
            "not started by this script (no label $ownerKey=$owner); leaving it alone. " +
            "Remove it yourself (docker rm -f $Container) or choose another -Container.")
        exit 1
    }
    docker rm -f $Container | Out-Null
}
$runArgs = @(
    "run", "-d",
    "--name", $Container,
    "--label", "$ownerKey=$owner",
    "--restart", "unless-stopped",
    "--read-only", "--tmpfs", "/tmp",
    "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true"
) + $gpuArgs + @(
    "-p", "127.0.0.1:$($Port):8765",
    "-v", "$($Volume):/data",
    "-e", "SONA_INSECURE=true",
    $Image
)
docker @runArgs | Out-Null
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }

# Wait for the model to load: /ready answers 200 once jobs can run.
for ($i = 0; $i -lt 60; $i++) {
    try {
        Invoke-WebRequest -UseBasicParsing -TimeoutSec 3 "http://127.0.0.1:$Port/ready" | Out-Null
        Write-Output "sona is ready on http://127.0.0.1:$Port"
        exit 0
    } catch {
        Start-Sleep -Seconds 2
    }
}
Write-Error "start_transcription_service: not ready after 120 s; docker logs $Container says why"
exit 1

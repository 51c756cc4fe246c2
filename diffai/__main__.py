from diffai.cli import console

console()

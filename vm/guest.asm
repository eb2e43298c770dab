; medv test guest for qemu-system-x86_64 -M pc (SeaBIOS, 16-bit real mode).
;
; Disk layout (LBA = 512-byte sector; the numbers marked * come from vm/layout.json):
;   0                    stage 1: the boot sector (UART, prints, loads stage 2)
;   1 .. STAGE2_SECTORS  stage 2 (loaded to 0x7e00, right after the boot sector)
;   COUNTER_LBA*         boot counter (zero in a fresh image)
;   MARKER_LBA*          MARKER_SECTORS* sectors of marker, written by the guest (zero when fresh)
;
; What it does, in order (every line goes to COM1, 0x3f8, as "MEDV-GUEST ...\r\n"):
;   1. "MEDV-GUEST start"
;   2. reads the boot counter sector (LBA COUNTER_LBA: 8-byte COUNTER_MAGIC, then a little-endian
;      uint32), adds one (a sector without the magic counts as 0, so a fresh image boots as 1),
;      writes it back and prints "MEDV-GUEST boot=<n>"
;   3. writes MARKER_SECTORS sectors at LBA MARKER_LBA, filled with the 32-byte marker repeated,
;      and prints "MEDV-GUEST marker-written"
;   4. sends ATA FLUSH CACHE to the primary master and prints "MEDV-GUEST flushed" when an IDE
;      disk acknowledged it (nothing on other disk types)
;   5. enables the ACPI power button, prints "MEDV-GUEST ready", sleeps (hlt) until the button is
;      pressed (QMP system_powerdown), prints "MEDV-GUEST powerdown" and powers off (PIIX4 PM1a
;      control at 0x604: SLP_EN with sleep type 0 = soft off; QEMU exits).
; A failed disk call prints "MEDV-GUEST error=<what> ah=<hex>" and the guest goes on (a read-only
; disk still reaches "ready").
;
; The marker is NOT in this sector as plain text: the build passes it XOR-ed with MARKER_XOR and
; the guest decodes it at run time, so the pattern appears on a disk only where the guest wrote it
; (scripts/build-guests.js checks that). Numbers come from vm/layout.json via nasm -D:
;   COUNTER_LBA, COUNTER_MAGIC (a quoted 8-char string), MARKER_LBA, MARKER_SECTORS,
;   MARKER_XORED (32 comma-separated bytes), MARKER_XOR.
; Disk I/O uses the int 13h extensions (AH=41h check, 42h read, 43h write).

bits 16
org 0x7c00

%ifndef COUNTER_LBA
%error "assemble with scripts/build-guests.js (it passes the layout from vm/layout.json)"
%endif

COM1            equ 0x3f8
PM1_STS         equ 0x600           ; SeaBIOS programs the PIIX4 PM base to 0x600
PM1_EN          equ 0x602
PM1_CNT         equ 0x604
PWRBTN          equ 0x0100          ; bit 8 in PM1_STS / PM1_EN
SLP_EN_SOFT_OFF equ 0x2000          ; SLP_EN (bit 13), SLP_TYP 0
COUNTER_SEG     equ 0x2000          ; 0x20000: one-sector buffer
MARKER_SEG      equ 0x3000          ; 0x30000: marker buffer (4 KiB, no 64 KiB crossing)
STAGE2_SECTORS  equ 4
BIOS_TICKS      equ 0x046c          ; dword, 18.2 Hz

%if COUNTER_LBA < 1 + STAGE2_SECTORS || MARKER_LBA < 1 + STAGE2_SECTORS || COUNTER_LBA == MARKER_LBA
%error "COUNTER_LBA and MARKER_LBA must lie after stage 2 and differ"
%endif

start:
        cli
        xor ax, ax
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov sp, 0x7c00
        sti
        cld
        jmp 0:main
main:
        mov [drive], dl

        ; --- UART: 115200 8N1, FIFO on, no interrupts
        mov dx, COM1 + 1
        xor al, al
        out dx, al              ; IER = 0
        add dx, 2
        mov al, 0x80
        out dx, al              ; LCR: DLAB
        mov dx, COM1
        mov al, 1
        out dx, al              ; divisor low = 1
        inc dx
        xor al, al
        out dx, al              ; divisor high = 0
        add dx, 2
        mov al, 0x03
        out dx, al              ; LCR: 8N1
        dec dx
        mov al, 0xc7
        out dx, al              ; FCR: enable + clear FIFOs
        add dx, 2
        mov al, 0x03
        out dx, al              ; MCR: DTR RTS

        mov si, msg_start
        call say

        ; --- int 13h extensions present? then load stage 2 (LBA 1..) to 0x7e00
        mov ah, 0x41
        mov bx, 0x55aa
        mov dl, [drive]
        int 0x13
        mov si, msg_noedd
        jc stop
        cmp bx, 0xaa55
        jne stop
        mov word [dap_seg], 0
        mov word [dap_off], stage2
        mov dword [dap_lba], 1
        mov byte [dap_count], STAGE2_SECTORS
        mov ah, 0x42
        call disk
        mov si, msg_stage2
        jc stop
        mov word [dap_off], 0
        jmp stage2

stop:                           ; SI = what went wrong; stage 2 is not there: report and halt
        call say
.halt:
        hlt
        jmp .halt

; disk: AH = 42h (read) or 43h (write) with the DAP filled in; CF and AH as from int 13h
disk:
        mov al, 0               ; write flags: no verify
        mov si, dap
        mov dl, [drive]
        int 0x13
        ret

; say: "MEDV-GUEST " + string at SI + CRLF
say:
        call prefix
        call puts
crlf:
        mov al, 13
        call putc
        mov al, 10
        jmp putc

prefix:
        push si
        mov si, msg_prefix
        call puts
        pop si
        ret

puts:                           ; zero-terminated string at DS:SI
        lodsb
        test al, al
        jz .end
        call putc
        jmp puts
.end:
        ret

putc:                           ; AL: to the screen (BIOS teletype) and to COM1
        push dx
        push ax
        push bx
        mov ah, 0x0e
        xor bx, bx
        int 0x10
        pop bx
        pop ax
        push ax
        mov dx, COM1 + 5
.busy:
        in al, dx
        test al, 0x20
        jz .busy
        pop ax
        mov dx, COM1
        out dx, al
        pop dx
        ret

msg_prefix:     db "MEDV-GUEST ", 0
msg_start:      db "start", 0
msg_noedd:      db "error=no-edd", 0
msg_stage2:     db "error=stage2-read", 0

align 4
dap:            db 0x10, 0
dap_count:      dw 0
dap_off:        dw 0
dap_seg:        dw 0
dap_lba:        dq 0
drive:          db 0

        times 510 - ($ - $$) db 0
        dw 0xaa55

; ---------------------------------------------------------------- stage 2 (LBA 1.., at 0x7e00)
stage2:
        ; --- boot counter
        mov word [dap_seg], COUNTER_SEG
        mov dword [dap_lba], COUNTER_LBA
        mov byte [dap_count], 1
        mov ah, 0x42
        call disk
        mov si, msg_err_cread
        jc .cfail
        mov ax, COUNTER_SEG
        mov es, ax
        xor eax, eax            ; count if the magic is missing
        xor di, di
        mov si, magic
        mov cx, 8
        repe cmpsb
        jne .fresh
        mov eax, [es:8]
.fresh:
        inc eax
        mov [count], eax
        xor di, di              ; sector = magic, count, zeros
        mov cx, 256
        push ax
        xor ax, ax
        rep stosw
        pop ax
        xor di, di
        mov si, magic
        mov cx, 8
        rep movsb
        stosd
        mov ah, 0x43
        call disk
        mov si, msg_err_cwrite
        jc .cfail
        jmp .cdone
.cfail:
        call error              ; prints "error=..." and the status in AH
.cdone:
        mov si, msg_boot
        call prefix
        call puts
        mov eax, [count]
        call putdec
        call crlf

        ; --- marker: decode the XOR-ed pattern MARKER_SECTORS*512/32 times into MARKER_SEG:0
        mov ax, MARKER_SEG
        mov es, ax
        xor di, di
        mov cx, MARKER_SECTORS * 512 / 32
.rep:
        mov si, marker_xored
        mov bx, 32
.byte:
        lodsb
        xor al, MARKER_XOR
        stosb
        dec bx
        jnz .byte
        loop .rep
        mov word [dap_seg], MARKER_SEG
        mov dword [dap_lba], MARKER_LBA
        mov byte [dap_count], MARKER_SECTORS
        mov ah, 0x43
        call disk
        mov si, msg_err_mwrite
        jnc .mok
        call error
        jmp .mdone
.mok:
        mov si, msg_marker
        call say
.mdone:

        ; --- ATA FLUSH CACHE (0xE7) on the primary master, wait up to ~5 s for BSY to clear
        mov dx, 0x1f6
        mov al, 0xe0            ; master, LBA
        out dx, al
        inc dx
        mov al, 0xe7
        out dx, al
        mov ebx, [BIOS_TICKS]
.fwait:
        in al, dx
        test al, 0x80
        jz .fdone
        mov ecx, [BIOS_TICKS]
        sub ecx, ebx
        cmp ecx, 91
        jb .fwait
        jmp power               ; timed out: no line
.fdone:
        and al, 0x61            ; DRDY | DF | ERR
        cmp al, 0x40            ; a present drive that finished without error
        jne power
        mov si, msg_flushed
        call say

        ; --- wait for the ACPI power button, then soft-off
power:
        mov dx, PM1_STS
        mov ax, PWRBTN
        out dx, ax              ; clear a stale status (write 1 to clear)
        mov dx, PM1_EN
        in ax, dx
        or ax, PWRBTN
        out dx, ax
        mov si, msg_ready
        call say
.wait:
        hlt                     ; woken by the timer tick at least
        mov dx, PM1_STS
        in ax, dx
        test ax, PWRBTN
        jz .wait
        cli
        mov si, msg_power
        call say
        mov dx, PM1_CNT
        mov ax, SLP_EN_SOFT_OFF
        out dx, ax
.halt:
        hlt
        jmp .halt

; error: SI = what; prints "MEDV-GUEST error=<what> ah=<hex>"
error:
        push ax
        push si
        mov si, msg_error
        call prefix
        call puts
        pop si
        call puts
        mov si, msg_ah
        call puts
        pop ax
        mov al, ah
        shr al, 4
        call puthex
        mov al, ah
        and al, 0x0f
        call puthex
        jmp crlf

puthex:                         ; AL = 0..15
        add al, '0'
        cmp al, '9'
        jbe putc
        add al, 'a' - '9' - 1
        jmp putc

putdec:                         ; EAX, unsigned
        mov ebx, 10
        xor cx, cx
.div:
        xor edx, edx
        div ebx
        push dx
        inc cx
        test eax, eax
        jnz .div
.out:
        pop ax
        add al, '0'
        call putc
        loop .out
        ret


msg_boot:       db "boot=", 0
msg_marker:     db "marker-written", 0
msg_flushed:    db "flushed", 0
msg_ready:      db "ready", 0
msg_power:      db "powerdown", 0
msg_error:      db "error=", 0
msg_ah:         db " ah=", 0
msg_err_cread:  db "counter-read", 0
msg_err_cwrite: db "counter-write", 0
msg_err_mwrite: db "marker-write", 0
magic:          db COUNTER_MAGIC
marker_xored:   db MARKER_XORED
align 4
count:          dd 0

        times 512 + STAGE2_SECTORS * 512 - ($ - $$) db 0
